"""ONNX Runtime's graph steps on an exported fp32 graph: transformer fusions, dynamic int8."""

from __future__ import annotations

import shutil
from pathlib import Path

from sentemb.scoped import quiet


def fuse(source: Path, target: Path, fusion: str | None) -> None:
    """ORT's transformer fusions (``fusion``: its optimizer's model type; exact to ~1e-7), or a copy."""
    if fusion is None:
        shutil.copyfile(source, target)
        return
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    with quiet():
        optimized = optimizer.optimize_model(
            str(source), model_type=fusion, optimization_options=FusionOptions(fusion), opt_level=0
        )
        optimized.save_model_to_file(str(target))


def quantize_dynamic(source: Path, target: Path, keep_fp32: tuple[str, ...] = ()) -> None:
    """Dynamic int8: signed per-output-channel MatMul weights (what reaches AVX512-VNNI), uint8 activations.

    Embeddings, layer norms, softmax and GELU stay fp32, and so do the MatMuls of the roles in
    ``keep_fp32`` (:mod:`sentemb.export.keep_fp32`); ONNX Runtime fuses the rest when it loads.
    """
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    excluded = kept_matmuls(source, keep_fp32) if keep_fp32 else []
    excluded += [f"{name}_MatMul" for name in excluded]  # the quantiser's name for a Gemm it turns into a MatMul
    with quiet():
        ort_quantize_dynamic(
            source,
            target,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
        )


def kept_matmuls(graph: Path, roles: tuple[str, ...]) -> list[str]:
    """The names of ``graph``'s MatMuls (and Gemms) that ``roles`` keep fp32. Unnamed nodes (the torch-free builder
    writes none) are named first, in ``graph`` itself, so that the quantiser can be told to skip them."""
    import onnx

    from sentemb.export.keep_fp32 import resolve

    model = onnx.load(str(graph))
    unnamed = [node for node in model.graph.node if not node.name]
    for i, node in enumerate(unnamed):
        node.name = f"{node.op_type}_{node.output[0]}_{i}"
    if unnamed:
        onnx.save(model, str(graph))
    weights = {init.name for init in model.graph.initializer}
    matmuls = [
        (node.name, node.input[1] if node.input[1] in weights else None)
        for node in model.graph.node
        if node.op_type in ("MatMul", "Gemm")
    ]
    return resolve(matmuls, roles)
