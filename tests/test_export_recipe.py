"""sentemb.export.recipe: the frozen Recipe is the cache key, and it follows everything an export depends on."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

import sentemb
from sentemb import export
from sentemb.config import Precision
from sentemb.models import read_model_folder
from sentemb.models.resolve import sha256_file
from tiny_models import build_tiny_model


@pytest.fixture(scope="module")
def bert_spec(tiny_dirs):
    return read_model_folder(tiny_dirs["bert"])


def test_key_follows_weights_precision_and_runtime(bert_spec, tmp_path):
    fp32 = export.recipe_for(bert_spec, Precision.FP32)
    assert fp32 == export.recipe_for(bert_spec, Precision.FP32)  # a pure function of the files
    keys = {
        fp32.key,
        export.recipe_for(bert_spec, Precision.INT8).key,
        export.recipe_for(bert_spec, Precision.FP32, "openvino").key,
        export.recipe_for(bert_spec, Precision.INT8, "openvino").key,
    }
    assert len(keys) == 4
    other = read_model_folder(build_tiny_model("bert", tmp_path, normalize=True, seed=1))  # same files but weights
    assert export.recipe_for(other, Precision.FP32).key != fp32.key
    assert dict(fp32.files)["model.safetensors"] == sha256_file(bert_spec.transformer_dir / "model.safetensors")


def test_every_field_is_part_of_the_key(bert_spec):
    recipe = export.recipe_for(bert_spec, Precision.INT8, "openvino")
    changes = {
        "graph": "padded",
        "fusion": "bert",
        "quantization": "other",
        "calibration": "0" * 64,
        "fp32_matmuls": ("feed-forward",),
        "builder": "onnx-direct",
        "opset": recipe.opset + 1,
        "versions": (*recipe.versions[:-1], (recipe.versions[-1][0], "0.0")),
        "schema": recipe.schema + 1,
    }
    for name, value in changes.items():
        assert dataclasses.replace(recipe, **{name: value}).key != recipe.key, name
    # fp32_matmuls is written only when some MatMuls stay fp32 (test_export_keep_fp32)
    assert set(recipe.to_json()) | {"fp32_matmuls"} == {f.name for f in dataclasses.fields(recipe)}
    assert hash(recipe) == hash(dataclasses.replace(recipe))  # frozen and hashable
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.graph = "padded"  # type: ignore[misc]


def test_the_builder_reads_the_recipe(bert_spec, tiny_dirs):
    onnx_fp32 = export.recipe_for(bert_spec, Precision.FP32)
    assert (onnx_fp32.graph, onnx_fp32.fusion, onnx_fp32.quantization) == ("padded", "bert", None)
    onnx_int8 = export.recipe_for(bert_spec, Precision.INT8)
    assert (onnx_int8.fusion, onnx_int8.calibration) == (None, None)
    assert onnx_int8.quantization == "dynamic-qint8-per-channel"
    ov_int8 = export.recipe_for(bert_spec, Precision.INT8, "openvino")
    assert ov_int8.graph == "packed" and ov_int8.calibration == sha256_file(export.CALIBRATION_FILE)
    assert export.recipe_for(bert_spec, Precision.FP32, "openvino").calibration is None
    mpnet = read_model_folder(tiny_dirs["mpnet"])
    assert export.recipe_for(mpnet, Precision.FP32, "openvino").graph == "padded"  # not a BERT layer stack
    assert export.recipe_for(bert_spec, Precision.FP32).versions == onnx_int8.versions
    assert dict(onnx_int8.versions)["onnxruntime"] != "absent"


def test_relative_positions_are_not_packed(tiny_dirs, tmp_path):
    folder = tmp_path / "relative"
    shutil.copytree(tiny_dirs["bert"], folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["position_embedding_type"] = "relative_key"
    config_path.write_text(json.dumps(config))
    spec = read_model_folder(folder)
    assert export.recipe_for(spec, Precision.FP32, "openvino").graph == "padded"


def test_what_cannot_be_exported_is_refused(bert_spec):
    with pytest.raises(sentemb.ConfigError, match="backend='torch'"):
        export.recipe_for(bert_spec, Precision.BF16)
    with pytest.raises(sentemb.ConfigError, match="'onnx', 'openvino'"):
        export.recipe_for(bert_spec, Precision.FP32, "tflite")
