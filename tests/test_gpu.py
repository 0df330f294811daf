"""The torch backend on CUDA: same vectors as sentence-transformers, half precision close to them.

Skipped where torch sees no GPU; run them there with ``python -m pytest -m gpu``.
"""

import numpy as np
import pytest

import sentemb
from sentemb.config import Pooling
from sentemb.pooling import pool
from tiny_models import BACKBONES, PARITY_TEXTS, sentence_transformer

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("model_type", BACKBONES)
def test_cuda_fp32_matches_sentence_transformers(tiny_dirs, model_type):
    folder = tiny_dirs[model_type]
    reference = sentence_transformer(folder).encode(PARITY_TEXTS, convert_to_numpy=True, batch_size=4)
    assert sentemb.load(folder, device="cuda").batch_size == 1024  # the GPU's default
    encoder = sentemb.load(folder, device="cuda", batch_size=2)  # several batches, some padded
    assert encoder.device.startswith("cuda") and encoder.batch_size == 2
    np.testing.assert_allclose(encoder.encode(PARITY_TEXTS), reference, atol=1e-5)
    one_by_one = np.stack([encoder.encode(text)[0] for text in PARITY_TEXTS])
    np.testing.assert_allclose(one_by_one, reference, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_half_precision_stays_close_to_fp32(tiny_dirs, precision):
    folder = tiny_dirs["bert"]
    exact = sentemb.load(folder, device="cuda").encode(PARITY_TEXTS)
    half = sentemb.load(folder, device="cuda", precision=precision).encode(PARITY_TEXTS)
    assert half.dtype == np.float32 and half.shape == exact.shape
    assert np.sum(half * exact, axis=1).min() > 0.999


@pytest.mark.parametrize("mode", list(Pooling))
def test_pooling_on_the_gpu_matches_numpy(mode):
    from sentemb.backends.torch_backend import pool_tensor

    rng = np.random.default_rng(1)
    emb = rng.standard_normal((4, 9, 8)).astype(np.float32)
    mask = np.array([[1] * 9, [1] * 4 + [0] * 5, [1] + [0] * 8, [1] * 8 + [0]])
    out = pool_tensor(torch.from_numpy(emb).cuda(), torch.from_numpy(mask).cuda(), mode)
    np.testing.assert_allclose(out.cpu().numpy(), pool(emb, mask, mode), rtol=1e-5, atol=1e-6)
