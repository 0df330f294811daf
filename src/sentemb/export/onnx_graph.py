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


def quantize_dynamic(source: Path, target: Path) -> None:
    """Dynamic int8: signed per-output-channel MatMul weights (what reaches AVX512-VNNI), uint8 activations.

    Embeddings, layer norms, softmax and GELU stay fp32; ONNX Runtime fuses the rest when it loads.
    """
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    with quiet():
        ort_quantize_dynamic(
            source,
            target,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
        )
