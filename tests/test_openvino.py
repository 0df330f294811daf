"""The OpenVINO backend: parity with torch on every backbone, bf16, int8 quality (export cache: test_export_*)."""

from __future__ import annotations

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
    assert (export.recipe_for(encoder.spec, Precision.FP32, "openvino").graph == "packed") is packed
    exported = export.find_export(encoder.spec, Precision.FP32, runtime="openvino")  # other tests export bert too
    xml = exported.model
    assert ('type="NonZero"' in xml.read_text()) is packed
    # A row padded to 64 tokens next to a short one gives the vectors each gets alone.
    texts = ["Short", TEXTS[3]]
    together = encoder.encode(texts)
    alone = np.vstack([encoder.encode(t) for t in texts])
    assert np.abs(together - alone).max() <= 1e-5


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
    names = {p.name for p in out.iterdir()}
    # the IR, its tokenizer and manifest, and the model's configs and modules (the folder loads on its own)
    graph = {"model.xml", "model.bin", export.TOKENIZER_FILE, export.MANIFEST_FILE}
    assert graph | {"config.json", "modules.json"} <= names
    assert not {n for n in names if n.endswith((".onnx", ".safetensors", ".bin")) and n != "model.bin"}
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
    from sentemb.extras import require

    expected = r"the OpenVINO backend needs no_such_module: pip install 'sentemb\[openvino\]'"
    with pytest.raises(ImportError, match=expected):
        require("no_such_module", "openvino", "the OpenVINO backend")

