"""Build one export from its :class:`~sentemb.export.recipe.Recipe`: torch -> ONNX, then fusion,
int8 quantisation or OpenVINO IR, then the tokenizer and (last) the manifest. Needs torch and
transformers (or, for the BERT family, neither: :mod:`sentemb.export.onnx_builder`); the folder
it writes into is private until :mod:`sentemb.export.cache` publishes it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sentemb.errors import ConfigError
from sentemb.export.manifest import TOKENIZER_FILE, Exported, write_manifest
from sentemb.export.recipe import BUILDER, MODEL_FILES, Recipe

if TYPE_CHECKING:
    from sentemb.models import ModelSpec


def build_export(spec: ModelSpec, recipe: Recipe, out: Path, *, trust_remote_code: bool = False) -> Exported:
    """Write the model file(s), tokenizer.json and (last) manifest.json that ``recipe`` describes into ``out``."""
    from sentemb.export import onnx_builder
    from sentemb.tokenize import load_hf_tokenizer

    if recipe.builder not in (BUILDER, onnx_builder.NAME):
        raise ConfigError(f"no builder for recipes of {recipe.builder!r}; this sentemb builds with {BUILDER!r}")
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_hf_tokenizer(str(spec.transformer_dir), trust_remote_code)
    (out / TOKENIZER_FILE).write_text(loaded.tokenizer.to_str(), encoding="utf-8")
    graph = out / "graph.onnx"
    target = out / MODEL_FILES[recipe.runtime][0]
    try:
        if recipe.builder == onnx_builder.NAME:
            onnx_builder.build_onnx(spec, recipe, graph, loaded.uses_type_ids)
        else:
            from sentemb.export.torch_onnx import export_torch

            export_torch(spec, recipe, graph, loaded.uses_type_ids, trust_remote_code)
        if recipe.runtime == "openvino":
            from sentemb.export.openvino_ir import to_openvino

            to_openvino(graph, target, recipe, loaded, spec)
        else:
            from sentemb.export.onnx_graph import fuse, quantize_dynamic

            if recipe.quantization is not None:
                quantize_dynamic(graph, target, recipe.fp32_matmuls)
            else:
                fuse(graph, target, recipe.fusion)
    finally:
        graph.unlink(missing_ok=True)
    return write_manifest(out, recipe, loaded)
