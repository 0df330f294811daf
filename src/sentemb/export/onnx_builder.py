"""The torch-free builder: the ONNX graph of a BERT-family encoder written with ``onnx.helper``
straight from ``model.safetensors`` and ``config.json`` (BERT/MiniLM, RoBERTa, XLM-RoBERTa).

The graph is the padded one transformers runs (embeddings + LayerNorm, then per layer: self-attention
with the additive mask, residual LayerNorm, GELU feed-forward, residual LayerNorm), so its vectors
match the torch path to float rounding. Other families need torch: ``pip install 'sentemb[torch]'``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sentemb.errors import ConfigError

if TYPE_CHECKING:
    from sentemb.export.recipe import Recipe
    from sentemb.models import ModelSpec

NAME = "onnx.helper"
# Model types this builder writes, and whether their position ids count from the padding id (RoBERTa).
COVERED = {"bert": False, "roberta": True, "xlm-roberta": True, "camembert": True}
_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")


def covers(spec: ModelSpec) -> bool:
    """Whether this builder can write ``spec``'s graph (absolute positions, encoder only, safetensors)."""
    if spec.model_type not in COVERED or spec.pickle_weights:
        return False
    config = _config(spec)
    return (
        config.get("position_embedding_type", "absolute") == "absolute"
        and not config.get("is_decoder", False)
        and config.get("hidden_act", "gelu") in _ACTIVATIONS
    )


def needs_torch(spec: ModelSpec) -> str:
    """The one-line refusal for a model this builder does not cover."""
    return (
        f"{spec.root} is a {spec.model_type} model, which sentemb exports only with torch "
        "(the torch-free builder covers BERT, MiniLM, RoBERTa and XLM-RoBERTa): pip install 'sentemb[torch]'"
    )


def _config(spec: ModelSpec) -> dict[str, Any]:
    return dict(json.loads((spec.transformer_dir / "config.json").read_text(encoding="utf-8")))


def _weights(spec: ModelSpec) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    tensors: dict[str, np.ndarray] = {}
    for path in spec.weights:
        tensors.update(load_file(str(path)))
    anchor = "embeddings.word_embeddings.weight"
    prefix = next((k[: -len(anchor)] for k in tensors if k.endswith(anchor)), None)
    if prefix is None:
        raise ConfigError(f"{spec.transformer_dir} has no {anchor}; {needs_torch(spec)}")
    return {k[len(prefix) :]: v.astype(np.float32) for k, v in tensors.items() if k.startswith(prefix)}


class _Graph:
    """Nodes and initialisers, named as they are added."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def w(self, key: str, transpose: bool = False) -> str:
        value = self.weights[key]
        return self.const(key, value.T if transpose else value)

    def op(self, kind: str, *inputs: str, **attrs: Any) -> str:
        from onnx import helper

        self._count += 1
        out = f"{kind.lower()}_{self._count}"
        self.nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def linear(self, x: str, key: str) -> str:
        return self.op("Add", self.op("MatMul", x, self.w(f"{key}.weight", True)), self.w(f"{key}.bias"))

    def norm(self, x: str, key: str, eps: float) -> str:
        return self.op("LayerNormalization", x, self.w(f"{key}.weight"), self.w(f"{key}.bias"), axis=-1, epsilon=eps)


def _embeddings(g: _Graph, config: dict[str, Any], roberta: bool, type_ids: bool) -> str:
    ids = "input_ids"
    words = g.op("Gather", g.w("embeddings.word_embeddings.weight"), ids)
    if roberta:  # positions count the non-padding tokens, from padding_idx + 1
        pad = g.const("pad_id", np.array(int(config.get("pad_token_id", 1)), dtype=np.int64))
        real = g.op("Cast", g.op("Not", g.op("Equal", ids, pad)), to=7)
        positions = g.op("Add", g.op("Mul", g.op("CumSum", real, g.const("axis1", np.array(1))), real), pad)
    else:
        length = g.op("Gather", g.op("Shape", ids), g.const("one", np.array(1, dtype=np.int64)), axis=0)
        zero = g.const("zero", np.array(0, dtype=np.int64))
        step = g.const("step", np.array(1, dtype=np.int64))
        positions = g.op("Unsqueeze", g.op("Range", zero, length, step), g.const("axes0", np.array([0])))
    total = g.op("Add", words, g.op("Gather", g.w("embeddings.position_embeddings.weight"), positions))
    if "embeddings.token_type_embeddings.weight" in g.weights:
        table = g.weights["embeddings.token_type_embeddings.weight"]
        types = (
            g.op("Gather", g.w("embeddings.token_type_embeddings.weight"), "token_type_ids")
            if type_ids
            else (g.const("type0", table[0]))
        )
        total = g.op("Add", total, types)
    return g.norm(total, "embeddings.LayerNorm", float(config.get("layer_norm_eps", 1e-12)))


def _activation(g: _Graph, x: str, kind: str) -> str:
    if kind == "relu":
        return g.op("Relu", x)
    if kind == "gelu":  # exact: 0.5 x (1 + erf(x / sqrt 2))
        inner = g.op("Erf", g.op("Div", x, g.const(f"sqrt2_{g._count}", np.array(math.sqrt(2.0), np.float32))))
        one = g.const(f"one_f_{g._count}", np.array(1.0, np.float32))
        half = g.const(f"half_{g._count}", np.array(0.5, np.float32))
        return g.op("Mul", g.op("Mul", x, half), g.op("Add", inner, one))
    return _gelu_tanh(g, x)


def _gelu_tanh(g: _Graph, x: str) -> str:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    n = g._count
    cube = g.op("Mul", g.op("Mul", x, x), x)
    inner = g.op("Add", x, g.op("Mul", cube, g.const(f"c3_{n}", np.array(0.044715, np.float32))))
    scaled = g.op("Mul", inner, g.const(f"k_{n}", np.array(math.sqrt(2.0 / math.pi), np.float32)))
    one = g.const(f"one_t_{n}", np.array(1.0, np.float32))
    half = g.op("Mul", x, g.const(f"half_t_{n}", np.array(0.5, np.float32)))
    return g.op("Mul", half, g.op("Add", g.op("Tanh", scaled), one))


def _layer(g: _Graph, h: str, mask: str, i: int, config: dict[str, Any]) -> str:
    key = f"encoder.layer.{i}"
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    size = hidden // heads
    split = g.const(f"split_{i}", np.array([0, 0, heads, size], dtype=np.int64))
    merge = g.const(f"merge_{i}", np.array([0, 0, hidden], dtype=np.int64))

    def heads_of(name: str, perm: list[int]) -> str:
        return g.op("Transpose", g.op("Reshape", g.linear(h, f"{key}.attention.self.{name}"), split), perm=perm)

    q, k, v = heads_of("query", [0, 2, 1, 3]), heads_of("key", [0, 2, 3, 1]), heads_of("value", [0, 2, 1, 3])
    scale = g.const(f"scale_{i}", np.array(1.0 / math.sqrt(size), np.float32))
    scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), mask)
    context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
    context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), merge)
    attended = g.op("Add", g.linear(context, f"{key}.attention.output.dense"), h)
    h = g.norm(attended, f"{key}.attention.output.LayerNorm", eps)
    inner = _activation(g, g.linear(h, f"{key}.intermediate.dense"), str(config.get("hidden_act", "gelu")))
    return g.norm(g.op("Add", g.linear(inner, f"{key}.output.dense"), h), f"{key}.output.LayerNorm", eps)


def build_onnx(spec: ModelSpec, recipe: Recipe, path: Path, uses_type_ids: bool) -> None:
    """Write ``spec``'s padded encoder graph (inputs input_ids, attention_mask[, token_type_ids];
    output last_hidden_state) to ``path``."""
    import onnx
    from onnx import TensorProto, helper

    if not covers(spec):
        raise ConfigError(needs_torch(spec))
    config = _config(spec)
    g = _Graph(_weights(spec))
    hidden = int(config["hidden_size"])
    h = _embeddings(g, config, COVERED[spec.model_type], uses_type_ids)
    # (1 - mask) * float32 min, shaped (B, 1, 1, T): what transformers adds to the attention scores.
    keep = g.op("Cast", g.op("Unsqueeze", "attention_mask", g.const("axes12", np.array([1, 2]))), to=1)
    one = g.const("one_mask", np.array(1.0, np.float32))
    mask = g.op("Mul", g.op("Sub", one, keep), g.const("fmin", np.array(np.finfo(np.float32).min, np.float32)))
    for i in range(int(config["num_hidden_layers"])):
        h = _layer(g, h, mask, i, config)
    g.nodes.append(helper.make_node("Identity", [h], ["last_hidden_state"]))
    names = ["input_ids", "attention_mask", *(["token_type_ids"] if uses_type_ids else [])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in names]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden])
    graph = helper.make_graph(g.nodes, "encoder", inputs, [output], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", recipe.opset)], producer_name="sentemb")
    model.ir_version = min(model.ir_version, 9)
    onnx.save(model, str(path))
