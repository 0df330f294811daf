"""The ONNX backend: parity with torch on every backbone, the export cache, int8 quality, 'auto'."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sentemb
from sentemb import export
from sentemb.backends import auto_choice
from sentemb.config import EncoderConfig, Precision
from tiny_models import BACKBONES, build_tiny_model
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


def test_export_is_cached_and_reused(onnx_cache, tiny_dirs, monkeypatch):
    folder = tiny_dirs["bert"]
    first = sentemb.load(folder, backend="onnx", device="cpu").encode(TEXTS)

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this export")

    monkeypatch.setattr(export, "build_export", no_export)
    again = sentemb.load(folder, backend="onnx", device="cpu")
    assert again._backend.tokenizer is not None  # from the tokenizer.json cached beside the graph
    np.testing.assert_array_equal(again.encode(TEXTS), first)
    entries = [p for p in (onnx_cache / "onnx").iterdir() if p.name.startswith("bert-fp32-")]
    assert entries
    manifest = json.loads((entries[0] / export.MANIFEST_FILE).read_text())
    assert set(manifest["sha256"]) == {export.MODEL_FILES["onnx"][0], export.TOKENIZER_FILE}
    assert manifest["inputs"]["versions"]["onnxruntime"] != "absent"


def test_cache_key_follows_weights_and_options(tiny_dirs, tmp_path):
    spec = sentemb.load(tiny_dirs["bert"], device="cpu").spec
    fp32 = export.cache_key(export.key_inputs(spec, Precision.FP32))
    int8 = export.cache_key(export.key_inputs(spec, Precision.INT8))
    assert fp32 != int8
    other = build_tiny_model("bert", tmp_path, normalize=True, seed=1)  # same files but the weights
    other_spec = sentemb.load(other, device="cpu").spec
    assert export.cache_key(export.key_inputs(other_spec, Precision.FP32)) != fp32


def test_damaged_cached_file_is_detected_and_rebuilt(tiny_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv(export.CACHE_ENV, str(tmp_path / "cache"))
    folder = tiny_dirs["distilbert"]
    before = sentemb.load(folder, backend="onnx", device="cpu").encode(TEXTS)
    (entry,) = (tmp_path / "cache" / "onnx").iterdir()
    model = entry / export.MODEL_FILES["onnx"][0]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte somewhere in the weights
    model.write_bytes(bytes(data))
    assert export.check_export(entry) is None

    calls = []
    real = export.build_export
    monkeypatch.setattr(export, "build_export", lambda *a, **k: calls.append(1) or real(*a, **k))
    after = sentemb.load(folder, backend="onnx", device="cpu").encode(TEXTS)
    assert calls == [1]
    assert export.check_export(entry) is not None
    np.testing.assert_allclose(after, before, atol=1e-6)

    (entry / export.MANIFEST_FILE).write_text("{not json")  # a torn manifest counts as damaged too
    sentemb.load(folder, backend="onnx", device="cpu")
    assert calls == [1, 1]


def test_unwritable_cache_says_what_to_do(tiny_dirs, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(export.CACHE_ENV, str(blocker))
    with pytest.raises(sentemb.BackendError, match="SENTEMB_CACHE"):
        sentemb.load(tiny_dirs["bert"], backend="onnx", device="cpu")


def test_int8_on_a_tiny_model_keeps_shape_and_direction(onnx_cache, tiny_dirs):
    folder = tiny_dirs["bert"]
    reference = sentemb.load(folder, device="cpu").encode(TEXTS)
    vectors = sentemb.load(folder, backend="onnx", precision="int8", device="cpu").encode(TEXTS)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    cosine = np.sum(vectors * reference, axis=1)  # both normalised
    assert cosine.min() > 0.95


def test_onnx_refuses_bf16_and_cuda_fallback_warns(onnx_cache, tiny_dirs):
    folder = tiny_dirs["bert"]
    with pytest.raises(sentemb.ConfigError, match="backend='torch'"):
        sentemb.load(folder, backend="onnx", precision="bf16", device="cpu")
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        encoder = sentemb.load(folder, backend="onnx", device="cuda")
    assert encoder.device == "cpu"


def test_auto_choice(monkeypatch):
    import sentemb.backends as backends

    installed = {"openvino", "nncf", "onnxruntime"}
    monkeypatch.setattr(backends, "_installed", lambda module: module in installed)
    monkeypatch.setattr(backends, "_gpu_present", lambda: False)
    monkeypatch.setattr(backends, "_cpu_has_bf16", lambda: True)
    base = EncoderConfig(backend="auto", device="auto")

    def choice(**changes):
        chosen = auto_choice(base.replace(**changes))
        return chosen.backend, chosen.precision.value, chosen.device

    # OpenVINO first on the CPU: exact fp32, native bf16, static int8
    assert choice() == ("openvino", "fp32", "cpu")
    assert choice(precision="bf16") == ("openvino", "bf16", "cpu")
    assert choice(precision="int8") == ("openvino", "int8", "cpu")
    installed.discard("openvino")  # then ONNX Runtime, torch for bf16
    assert choice() == ("onnx", "fp32", "auto")
    assert choice(precision="int8") == ("onnx", "int8", "cpu")
    assert choice(precision="bf16")[:2] == ("torch", "bf16")
    monkeypatch.setattr(backends, "_cpu_has_bf16", lambda: False)  # emulated bf16: exact fp32 instead
    assert choice(precision="bf16")[:2] == ("onnx", "fp32")
    installed.clear()
    assert choice()[0] == "torch"
    installed.update({"openvino", "nncf"})
    monkeypatch.setattr(backends, "_gpu_present", lambda: True)  # a GPU: torch, but int8 stays on the CPU
    assert choice()[0] == "torch"
    assert choice(precision="int8") == ("openvino", "int8", "cpu")


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
    assert {p.name for p in out.iterdir()} == {*export.MODEL_FILES["onnx"], export.TOKENIZER_FILE, export.MANIFEST_FILE}
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
    assert encoder.config.backend == encoder.backend == facts["backend"] != "auto"
    from sentemb.backends import _cpu_has_bf16

    assert facts["precision"] == ("bf16" if _cpu_has_bf16() else "fp32")  # emulated bf16 runs as exact fp32
