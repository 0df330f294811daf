"""The OpenVINO backend: parity with torch on every backbone, bf16 and int8 quality, its export cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sentemb
from sentemb import export
from sentemb.config import Precision
from tiny_models import BACKBONES
from tiny_models import PARITY_TEXTS as TEXTS

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")


def _native_bf16() -> bool:
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.parametrize("model_type", BACKBONES)
def test_openvino_fp32_matches_torch_on_every_backbone(onnx_cache, tiny_dirs, model_type):
    folder = tiny_dirs[model_type]
    ours = sentemb.load(folder, backend="openvino", device="cpu", batch_size=2)  # several batches in flight
    assert ours.backend == "openvino" and ours.device == "cpu"
    reference = sentemb.load(folder, backend="torch", device="cpu").encode(TEXTS)
    vectors = ours.encode(TEXTS)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    assert np.abs(vectors - reference).max() <= 1e-5
    singles = np.vstack([ours.encode(text) for text in TEXTS[:3]])
    assert np.abs(singles - reference[:3]).max() <= 1e-5


@pytest.mark.parametrize("model_type", ["bert", "mpnet"])
def test_bert_family_runs_a_packed_graph(onnx_cache, tiny_dirs, model_type):
    """BERT's layers run on the real tokens only (NonZero/Gather around attention); others as exported."""
    encoder = sentemb.load(tiny_dirs[model_type], backend="openvino", device="cpu")
    packed = model_type in export.PACKED_TYPES
    assert (export.key_inputs(encoder.spec, Precision.FP32, "openvino").get("graph") == "packed") is packed
    (xml,) = (p for p in (onnx_cache / "openvino").glob(f"{model_type}-fp32-*/model.xml"))
    assert ('type="NonZero"' in xml.read_text()) is packed
    # A row padded to 64 tokens next to a short one gives the vectors each gets alone.
    texts = ["Short", TEXTS[3]]
    together = encoder.encode(texts)
    alone = np.vstack([encoder.encode(t) for t in texts])
    assert np.abs(together - alone).max() <= 1e-5


def test_openvino_export_is_cached_checked_and_rebuilt(tiny_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv(export.CACHE_ENV, str(tmp_path / "cache"))
    folder = tiny_dirs["bert"]
    before = sentemb.load(folder, backend="openvino", device="cpu").encode(TEXTS)
    (entry,) = (tmp_path / "cache" / "openvino").iterdir()
    manifest = json.loads((entry / export.MANIFEST_FILE).read_text())
    assert set(manifest["sha256"]) == {"model.xml", "model.bin", export.TOKENIZER_FILE}
    assert manifest["runtime"] == "openvino" and manifest["inputs"]["versions"]["openvino"] != "absent"

    calls = []
    real = export.build_export
    monkeypatch.setattr(export, "build_export", lambda *a, **k: calls.append(1) or real(*a, **k))
    sentemb.load(folder, backend="openvino", precision="bf16" if _native_bf16() else "fp32", device="cpu")
    assert calls == []  # bf16 compiles the cached fp32 IR: no new export
    weights = entry / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    after = sentemb.load(folder, backend="openvino", device="cpu").encode(TEXTS)
    assert calls == [1]
    np.testing.assert_allclose(after, before, atol=1e-6)


def test_int8_key_follows_the_calibration_texts(tiny_dirs):
    spec = sentemb.load(tiny_dirs["bert"], device="cpu").spec
    int8 = export.key_inputs(spec, Precision.INT8, "openvino")
    assert int8["calibration"] == export.sha256_file(export.CALIBRATION_FILE)
    assert "calibration" not in export.key_inputs(spec, Precision.FP32, "openvino")
    assert export.cache_key(int8) != export.cache_key(export.key_inputs(spec, Precision.INT8))  # onnx int8


def test_openvino_refuses_cuda_and_fp16(tiny_dirs):
    with pytest.raises(sentemb.ConfigError, match="CPU"):
        sentemb.load(tiny_dirs["bert"], backend="openvino", device="cuda")
    with pytest.raises(sentemb.ConfigError, match="fp16"):
        sentemb.load(tiny_dirs["bert"], backend="openvino", precision="fp16", device="cpu")


def test_export_command_writes_openvino_files(onnx_cache, tiny_dirs, tmp_path):
    from click.testing import CliRunner

    from sentemb.cli import main

    out = tmp_path / "ir"
    result = CliRunner().invoke(main, ["export", str(tiny_dirs["mpnet"]), str(out), "--runtime", "openvino"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"model.xml", "model.bin", export.TOKENIZER_FILE, export.MANIFEST_FILE}
    assert export.check_export(out) is not None


@pytest.mark.slow
def test_default_model_openvino_fp32_bf16_int8_quality(onnx_cache, sts_reference):
    """fp32 is exact; bf16 keeps mean cosine >= 0.9999 and STS within 0.05; int8 >= 0.99 and within 0.5."""
    dev, unique, reference = sts_reference.dev, sts_reference.unique, sts_reference.vectors
    fp32 = sentemb.load(backend="openvino", device="cpu")
    assert np.abs(fp32.encode(unique) - reference).max() <= 1e-5
    checks = [("int8", 0.99, 0.5)] + ([("bf16", 0.9999, 0.05)] if _native_bf16() else [])
    for precision, min_mean_cosine, max_spearman_drop in checks:
        encoder = sentemb.load(backend="openvino", precision=precision, device="cpu")
        cosine = np.sum(encoder.encode(unique) * reference, axis=1)
        assert cosine.mean() >= min_mean_cosine, precision
        spearman = sentemb.evaluate_sts(encoder, dev.sentences1, dev.sentences2, dev.scores).spearman
        assert abs(spearman - sts_reference.spearman) <= max_spearman_drop, precision


def test_a_missing_optional_dependency_names_its_extra():
    from sentemb.errors import require

    expected = r"the OpenVINO backend needs no_such_module: pip install 'sentemb\[openvino\]'"
    with pytest.raises(ImportError, match=expected):
        require("no_such_module", "openvino", "the OpenVINO backend")
