"""Parity with sentence-transformers on every module shape sentemb runs (issue 12's matrix).

Each folder is built and saved by sentence-transformers, loaded by sentemb on torch, ONNX and
OpenVINO (fp32), and compared with sentence-transformers' own vectors: without a prompt, with the
"query" prompt (include_prompt true and false), and with truncate_dim.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import sentemb
from st_shapes import SHAPES, TRUNCATE, build_st_folder
from tiny_models import PARITY_TEXTS, build_tiny_model

BACKENDS = ["torch", "onnx", "openvino"]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def own_cache(tmp_path_factory):
    """An export cache of this module's own: its folders must not add exports to the session's shared cache
    (other tests count the exports of a backbone there)."""
    from sentemb.models.resolve import CACHE_ENV

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("st-parity-cache")))
        yield


@pytest.fixture(scope="session")
def st_parity(tmp_path_factory):
    """Every shape's folder and sentence-transformers' vectors for it (no prompt, query prompt, truncated)."""
    from sentence_transformers import SentenceTransformer

    root = tmp_path_factory.mktemp("st-shapes")
    backbone = build_tiny_model("bert", root / "backbone")
    out = {}
    for name, shape in SHAPES.items():
        folder = build_st_folder(backbone, shape, root / name.replace("/", "-"))
        st = SentenceTransformer(str(folder), device="cpu")
        refs = {"plain": st.encode(PARITY_TEXTS), "query": st.encode(PARITY_TEXTS, prompt_name="query")}
        if shape.truncate:
            short = SentenceTransformer(str(folder), device="cpu", truncate_dim=TRUNCATE)
            refs["truncated"] = short.encode(PARITY_TEXTS)
        out[name] = (folder, refs)
    return out


def _skip_missing(backend: str) -> None:
    module = {"onnx": "onnxruntime", "openvino": "openvino"}.get(backend)
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")


def parity(folder, refs, backend: str) -> dict[str, float]:
    """Max abs difference to sentence-transformers per case."""
    ours = sentemb.load(folder, backend=backend, device="cpu", batch_size=4)
    diffs = {
        "plain": np.abs(ours.encode(PARITY_TEXTS) - refs["plain"]).max(),
        "query": np.abs(ours.encode(PARITY_TEXTS, prompt_name="query") - refs["query"]).max(),
    }
    if "truncated" in refs:
        short = sentemb.load(folder, backend=backend, device="cpu", truncate_dim=TRUNCATE)
        vectors = short.encode(PARITY_TEXTS)
        assert vectors.shape == refs["truncated"].shape == (len(PARITY_TEXTS), TRUNCATE) and short.dim == TRUNCATE
        diffs["truncated"] = np.abs(vectors - refs["truncated"]).max()
    assert ours.dim == refs["plain"].shape[1]
    return {case: float(value) for case, value in diffs.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_vectors_match_sentence_transformers(own_cache, st_parity, shape, backend):
    _skip_missing(backend)
    folder, refs = st_parity[shape]
    diffs = parity(folder, refs, backend)
    assert max(diffs.values()) <= TOLERANCE, diffs


def test_prompt_tokens_are_left_out_only_when_the_model_says_so(st_parity):
    with_prompt = sentemb.load(st_parity["mean"][0], device="cpu")
    without = sentemb.load(st_parity["mean/no_prompt"][0], device="cpu")
    plain = with_prompt.encode(PARITY_TEXTS[:2])
    assert np.abs(with_prompt.encode(PARITY_TEXTS[:2], prompt_name="query") - plain).max() > 1e-3
    # Leaving "[CLS] query :" out still pools different tokens than the text alone ("[CLS] text").
    assert np.abs(without.encode(PARITY_TEXTS[:2], prompt_name="query") - plain).max() > 1e-6


def test_truncate_dim_keeps_a_prefix_and_does_not_renormalise_like_sentence_transformers(st_parity):
    folder, _ = st_parity["normalize"]
    full = sentemb.load(folder, device="cpu").encode(PARITY_TEXTS)
    short = sentemb.load(folder, device="cpu", truncate_dim=TRUNCATE).encode(PARITY_TEXTS)
    np.testing.assert_array_equal(short, full[:, :TRUNCATE])
    assert np.all(np.linalg.norm(short, axis=1) < 1.0)
    # normalize=True is sentence-transformers' normalize_embeddings: unit rows after truncation.
    unit = sentemb.load(folder, device="cpu", truncate_dim=TRUNCATE, normalize=True).encode(PARITY_TEXTS)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("value", [0, -3])
def test_truncate_dim_below_one_is_a_config_error(value):
    with pytest.raises(sentemb.ConfigError, match="truncate_dim must be at least 1"):
        sentemb.EncoderConfig(truncate_dim=value)


def test_truncate_dim_above_the_width_is_a_config_error(st_parity):
    with pytest.raises(sentemb.ConfigError, match=r"truncate_dim=17 is more than this model's width 16"):
        sentemb.load(st_parity["dense_tanh"][0], device="cpu", truncate_dim=17)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", ["two_dense", "dense+normalize", "lasttoken/no_prompt"])
def test_dense_heads_and_prompt_pooling_run_on_cuda(st_parity, shape):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    folder, refs = st_parity[shape]
    ours = sentemb.load(folder, backend="torch", device="cuda")
    assert ours.device.startswith("cuda") and ours.dim == refs["plain"].shape[1]
    assert np.abs(ours.encode(PARITY_TEXTS, prompt_name="query") - refs["query"]).max() <= 1e-4
