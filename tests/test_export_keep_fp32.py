"""MatMuls an int8 export keeps fp32: roles resolved to node names, a recipe field in the cache key, and
both quantisers (ONNX Runtime dynamic, NNCF static) leaving exactly those MatMuls in fp32."""

from __future__ import annotations

import dataclasses
import json

import pytest

import sentemb
from sentemb import export
from sentemb.config import Precision
from sentemb.export.keep_fp32 import check_roles, resolve
from sentemb.models import read_model_folder
from tiny_models import build_tiny_cross_encoder

PARTS = ["attention/self/query", "attention/self/key", "attention/self/value", "attention/output/dense",
         "intermediate/dense", "output/dense"]  # fmt: skip
LAYER_NAMES = [(f"/inner/bert/encoder/layer.{i}/{part}/MatMul", f"onnx::MatMul_{i}{k}")
               for i in range(3) for k, part in enumerate(PARTS)]  # fmt: skip
TORCH_NAMES = [
    *LAYER_NAMES,
    ("/inner/bert/encoder/layer.0/attention/self/MatMul", None),
    ("/inner/bert/pooler/dense/Gemm", "inner.bert.pooler.dense.weight"),
    ("/inner/classifier/Gemm", "inner.classifier.weight"),
]
# The torch-free builder names no node; its weights carry the module path.
HELPER_NAMES = [(f"MatMul_{i}", f"encoder.layer.{i // 2}.{['intermediate', 'output'][i % 2]}.dense.weight")
                for i in range(4)]  # fmt: skip
DISTILBERT_NAMES = [("/distilbert/transformer/layer.1/ffn/lin1/MatMul", "w1"),
                    ("/distilbert/transformer/layer.1/attention/q_lin/MatMul", "w2"),
                    ("/distilbert/transformer/layer.1/attention/out_lin/MatMul", "w3"),
                    ("/pre_classifier/Gemm", "w4")]  # fmt: skip


def test_roles_name_the_same_matmuls_whichever_builder_wrote_the_graph():
    feed_forward = resolve(TORCH_NAMES, ("feed-forward",))
    ends = ("intermediate/dense/MatMul", "0/output/dense/MatMul", "1/output/dense/MatMul", "2/output/dense/MatMul")
    assert feed_forward == [n for n, _ in TORCH_NAMES if n.endswith(ends)]
    assert len(feed_forward) == 6 and not any("attention" in n for n in feed_forward)
    after = [f"/inner/bert/encoder/layer.{i}/attention/output/dense/MatMul" for i in range(3)]
    assert resolve(TORCH_NAMES, ("attention-output",)) == after
    assert len(resolve(TORCH_NAMES, ("attention",))) == 9
    assert resolve(TORCH_NAMES, ("head",)) == ["/inner/bert/pooler/dense/Gemm", "/inner/classifier/Gemm"]
    assert resolve(TORCH_NAMES, ("attention-scores",)) == ["/inner/bert/encoder/layer.0/attention/self/MatMul"]
    last = resolve(TORCH_NAMES, ("layer:-1",))
    assert len(last) == 6 and all("layer.2/" in n for n in last) and resolve(TORCH_NAMES, ("layer:2",)) == last
    assert resolve(TORCH_NAMES, ("layer:3",)) == [] == resolve(TORCH_NAMES, ())
    assert resolve(HELPER_NAMES, ("feed-forward",)) == [n for n, _ in HELPER_NAMES]
    assert resolve(HELPER_NAMES, ("layer:-1",)) == ["MatMul_2", "MatMul_3"]
    assert resolve(DISTILBERT_NAMES, ("feed-forward", "head")) == [DISTILBERT_NAMES[0][0], DISTILBERT_NAMES[3][0]]
    assert resolve(DISTILBERT_NAMES, ("attention", "attention-output")) == [n for n, _ in DISTILBERT_NAMES[1:3]]


def test_unknown_roles_are_refused_naming_the_known_ones():
    assert check_roles(["head", "feed-forward", "head"]) == ("feed-forward", "head")
    with pytest.raises(sentemb.ConfigError, match=r"'ffn'.*feed-forward.*layer:N"):
        check_roles(["ffn"])
    with pytest.raises(sentemb.ConfigError, match="'layer:last'"):
        check_roles(["layer:last"])


def test_the_field_is_in_the_key_only_when_some_matmuls_stay_fp32(tiny_dirs):
    spec = read_model_folder(tiny_dirs["bert"])
    for runtime in ("onnx", "openvino"):
        recipe = export.recipe_for(spec, Precision.INT8, runtime)
        assert recipe.fp32_matmuls == () and "fp32_matmuls" not in recipe.to_json()  # embedding keys as before
        kept = dataclasses.replace(recipe, fp32_matmuls=("head", "feed-forward"))
        assert kept.fp32_matmuls == ("feed-forward", "head")  # sorted: the same roles, the same key
        assert kept.to_json()["fp32_matmuls"] == list(kept.fp32_matmuls)
        assert kept.key != recipe.key != dataclasses.replace(recipe, fp32_matmuls=("head",)).key
    with pytest.raises(sentemb.ConfigError, match="by role"):
        dataclasses.replace(recipe, fp32_matmuls=("everything",))


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory):
    return read_model_folder(build_tiny_cross_encoder("bert", tmp_path_factory.mktemp("keep") / "ce", seed=7))


def onnx_matmuls(path):
    """(names of the MatMuls/Gemms with fp32 weights, names of the int8 ones) in an ONNX graph."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {init.name for init in graph.initializer}
    fp32 = sorted(n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights)
    int8 = sorted(n.name.removesuffix("_quant") for n in graph.node if n.op_type == "MatMulInteger")
    return fp32, int8


def openvino_matmuls(path):
    """The same for an OpenVINO IR: a kept MatMul reads an fp32 constant, an int8 one its dequantised weight."""
    import openvino as ov

    fp32, int8 = [], []
    for op in ov.Core().read_model(str(path)).get_ordered_ops():
        if op.get_type_name() == "MatMul":
            weight = op.input_value(1).get_node().get_type_name()
            {"Constant": fp32, "Multiply": int8}.get(weight, []).append(op.get_friendly_name())
    return sorted(fp32), sorted(int8)


def test_a_reranker_keeps_its_default_roles_fp32_in_int8(onnx_cache, cross_encoder):
    roles = export.recipe.KEEP_FP32["rerank"]
    assert roles and export.recipe_for(cross_encoder, Precision.FP32).fp32_matmuls == ()
    for runtime, matmuls in (("onnx", onnx_matmuls), ("openvino", openvino_matmuls)):
        if runtime == "openvino":
            pytest.importorskip("nncf")
        assert export.recipe_for(cross_encoder, Precision.INT8, runtime).fp32_matmuls == roles
        fp32, int8 = matmuls(export.ensure_export(cross_encoder, Precision.INT8, runtime=runtime).model)
        everything = [(name, "weight") for name in fp32 + int8]
        assert fp32 == sorted(resolve(everything, roles)) != [], runtime  # exactly the kept roles run fp32 ...
        assert int8 and not resolve([(name, "weight") for name in int8], roles), runtime  # ... every other int8


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_any_roles_are_honoured_by_both_quantisers(cross_encoder, tmp_path, runtime):
    """The head's Gemms (ONNX Runtime turns them into MatMuls first) and the last layer, on a recipe of their own."""
    from sentemb.export.build import build_export

    if runtime == "openvino":
        pytest.importorskip("nncf")
    recipe = export.recipe_for(cross_encoder, Precision.INT8, runtime)
    recipe = dataclasses.replace(recipe, fp32_matmuls=("head", "layer:-1"))
    exported = build_export(cross_encoder, recipe, tmp_path / "out")
    fp32, int8 = (onnx_matmuls if runtime == "onnx" else openvino_matmuls)(exported.model)
    assert sum("pooler" in n or "classifier" in n for n in fp32) == 2 and not any("pooler" in n for n in int8)
    last = [n for n in fp32 if "layer.1/" in n]
    assert len(last) == 6 and not [n for n in int8 if "layer.1/" in n] and [n for n in int8 if "layer.0/" in n]
    assert len(fp32) == 8


def test_the_torch_free_graph_is_named_so_that_its_matmuls_can_be_kept(tiny_dirs, tmp_path):
    from sentemb.export import onnx_builder
    from sentemb.export.onnx_graph import quantize_dynamic

    spec = read_model_folder(tiny_dirs["bert"])
    graph, target = tmp_path / "graph.onnx", tmp_path / "model.onnx"
    onnx_builder.build_onnx(spec, export.recipe_for(spec, Precision.INT8), graph, True)
    quantize_dynamic(graph, target, ("feed-forward",))
    fp32, int8 = onnx_matmuls(target)
    layers = int(json.loads((spec.transformer_dir / "config.json").read_text())["num_hidden_layers"])
    assert len(fp32) == 2 * layers and len(int8) == 4 * layers  # q, k, v and attention output stay int8
