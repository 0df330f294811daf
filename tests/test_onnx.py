"""The ONNX backend: parity with torch on every backbone, int8 quality, 'auto' (the export cache: test_export_*)."""

from __future__ import annotations

import numpy as np
import pytest

import sentemb
from sentemb import export, plan
from tiny_models import BACKBONES
from tiny_models import PARITY_TEXTS as TEXTS

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("model_type", BACKBONES)
def test_onnx_fp32_matches_torch_on_every_backbone(onnx_cache, tiny_dirs, model_type):
    folder = tiny_dirs[model_type]
    ours = sentemb.load(folder, backend="onnx", device="cpu", batch_size=4)
    assert ours.backend == "onnx"
    reference = sentemb.load(folder, backend="torch", device="cpu").encode(TEXTS)
    vectors = ours.encode(TEXTS)
    assert vectors.shape == reference.shape == (len(TEXTS), 32)
    assert vectors.dtype == np.float32
    assert np.abs(vectors - reference).max() <= 1e-5
    # One text at a time (batch 1, other sequence lengths): the axes are dynamic, the order kept.
    singles = np.vstack([ours.encode(text) for text in TEXTS[:3]])
    assert np.abs(singles - reference[:3]).max() <= 1e-5


def test_int8_on_a_tiny_model_keeps_shape_and_direction(onnx_cache, tiny_dirs):
    folder = tiny_dirs["bert"]
    reference = sentemb.load(folder, device="cpu").encode(TEXTS)
    vectors = sentemb.load(folder, backend="onnx", precision="int8", device="cpu").encode(TEXTS)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    cosine = np.sum(vectors * reference, axis=1)  # both normalised
    assert cosine.min() > 0.95


def test_batches_run_at_once_give_the_vectors_of_one_at_a_time(onnx_cache, tiny_dirs, monkeypatch):
    monkeypatch.setenv(plan.ORT_THREADS_ENV, "1")  # the same kernels either way
    texts = [f"{text} ({i})" for i in range(6) for text in TEXTS]
    monkeypatch.setenv(plan.ORT_STREAMS_ENV, "1")
    serial = sentemb.load(tiny_dirs["bert"], backend="onnx", device="cpu", batch_size=3)
    monkeypatch.setenv(plan.ORT_STREAMS_ENV, "3")
    concurrent = sentemb.load(tiny_dirs["bert"], backend="onnx", device="cpu", batch_size=3)
    assert (serial.plan.streams, concurrent.plan.streams) == (1, 3)
    np.testing.assert_array_equal(concurrent.encode(texts), serial.encode(texts))
    # a call of one batch runs alone: on a machine with several cores, on the session with a thread per core
    for call in (texts[:1], texts[:3]):
        np.testing.assert_array_equal(concurrent.encode(call), serial.encode(call))


def test_onnx_refuses_bf16_and_cuda_fallback_warns(onnx_cache, tiny_dirs):
    folder = tiny_dirs["bert"]
    with pytest.raises(sentemb.ConfigError, match="backend='torch'"):
        sentemb.load(folder, backend="onnx", precision="bf16", device="cpu")
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        encoder = sentemb.load(folder, backend="onnx", device="cuda")
    assert encoder.device == "cpu"


def test_auto_backend_encodes_like_torch(onnx_cache, tiny_dirs):
    folder = tiny_dirs["roberta"]
    reference = sentemb.load(folder, device="cpu").encode(TEXTS)
    encoder = sentemb.load(folder, backend="auto", device="cpu")
    assert encoder.backend in ("openvino", "onnx")
    assert np.abs(encoder.encode(TEXTS) - reference).max() <= 1e-5


def test_export_command_writes_the_files(onnx_cache, tiny_dirs, tmp_path):
    from click.testing import CliRunner

    from sentemb.cli import main

    out = tmp_path / "exported"
    result = CliRunner().invoke(main, ["export", str(tiny_dirs["mpnet"]), str(out), "--precision", "int8"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}  # the graph, its tokenizer and manifest, the model's configs and modules
    graph = {*export.MODEL_FILES["onnx"], export.TOKENIZER_FILE, export.MANIFEST_FILE}
    assert graph | {"config.json", "modules.json"} <= names
    assert not {n for n in names if n.endswith((".safetensors", ".bin"))}
    assert export.check_export(out) is not None
    again = CliRunner().invoke(main, ["export", str(tiny_dirs["mpnet"]), str(out)])
    assert again.exit_code == 4 and "--force" in again.output


@pytest.mark.slow
def test_default_model_onnx_fp32_exact_and_int8_quality(onnx_cache, sts_reference):
    """ONNX fp32 is exact; int8 keeps STS dev Spearman within 0.5 of fp32 and mean cosine >= 0.99."""
    dev, unique, reference = sts_reference.dev, sts_reference.unique, sts_reference.vectors
    onnx_fp32 = sentemb.load(backend="onnx", device="cpu")
    assert np.abs(onnx_fp32.encode(unique[:500]) - reference[:500]).max() <= 1e-5
    int8 = sentemb.load(backend="onnx", precision="int8", device="cpu")
    vectors = int8.encode(unique)
    cosine = np.sum(vectors * reference, axis=1)
    assert cosine.mean() >= 0.99
    spearman_int8 = sentemb.evaluate_sts(int8, dev.sentences1, dev.sentences2, dev.scores).spearman
    assert abs(sts_reference.spearman - 86.72) < 0.05
    assert abs(spearman_int8 - sts_reference.spearman) <= 0.5


def test_auto_choice_is_recorded_in_the_encoders_config(onnx_cache, tiny_dirs):
    encoder = sentemb.load(tiny_dirs["bert"], backend="auto", precision="bf16", device="cpu")
    facts = encoder.describe()
    assert encoder.config.backend == encoder.backend == facts.backend != "auto"
    from sentemb.machine import Machine

    # emulated bf16 runs as exact fp32; native bf16 is measured against exact fp32 ("openvino fp32"), the faster kept
    measured_fp32 = facts.auto_choice is not None and facts.auto_choice["backend"] == "openvino fp32"
    exact = not Machine.here().native_bf16 or measured_fp32
    assert facts.precision == encoder.config.precision.value == encoder.plan.precision == ("fp32" if exact else "bf16")
    assert "fastest" in encoder.plan.why[0] and encoder.plan.backend == facts.backend
