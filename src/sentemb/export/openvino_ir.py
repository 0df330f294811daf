"""ONNX graph -> OpenVINO IR, fp32 or int8 (static, calibrated by NNCF)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentemb.config import Precision
from sentemb.export.recipe import CALIBRATION_FILE
from sentemb.extras import require
from sentemb.scoped import env_var, quiet, quiet_console

if TYPE_CHECKING:
    from sentemb.export.recipe import Recipe
    from sentemb.models import ModelSpec
    from sentemb.tokenize import LoadedTokenizer


def to_openvino(graph: Path, target: Path, recipe: Recipe, loaded: LoadedTokenizer, spec: ModelSpec) -> None:
    """The ONNX graph as OpenVINO IR in fp32 (bf16 is chosen when it is compiled), or int8.

    int8 is static: NNCF measures activation ranges on the calibration texts and puts int8 on
    every MatMul (u8 activations x signed per-channel weights: AVX512-VNNI/AMX). Smooth-quant is
    off: it raises the mean cosine a little but lets outliers fall to 0.88 (0.97 without it).
    """
    ov = require("openvino", "openvino", "the OpenVINO export")
    model = ov.Core().read_model(str(graph))
    if recipe.precision is Precision.INT8:
        model = _calibrate(model, loaded, spec, recipe.fp32_matmuls)
    ov.save_model(model, str(target), compress_to_fp16=False)  # fp16 weights would break exactness


def _calibration_feeds(model: Any, loaded: LoadedTokenizer, spec: ModelSpec) -> list[dict[str, Any]]:
    """The calibration texts as the IR's input batches (8 texts each, length-sorted)."""
    from sentemb.batching import pad, plan_batches
    from sentemb.config import LongText
    from sentemb.tokenize import TokenizerSpec, tokenize

    texts = [line for line in CALIBRATION_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    token_spec = TokenizerSpec(loaded.tokenizer, spec.max_length, spec.lowercase)
    sequences, _ = tokenize(token_spec, texts, LongText.TRUNCATE, 0, 0)
    names = {item.get_any_name() for item in model.inputs}
    feeds = []
    for rows in plan_batches([len(s.ids) for s in sequences], 8, 8 * 512):
        chosen = [sequences[r] for r in rows]
        batch = pad([s.ids for s in chosen], [s.type_ids for s in chosen], loaded.pad_id, loaded.uses_type_ids)
        feeds.append(batch.feed(names))
    return feeds


def kept_matmuls(model: Any, roles: tuple[str, ...]) -> list[str]:
    """The names of the IR's MatMuls that ``roles`` keep fp32 (:mod:`sentemb.export.keep_fp32`); a MatMul's
    weight is the constant it reads (through a Convert, if any), else it has none."""
    from sentemb.export.keep_fp32 import resolve

    matmuls = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        source = op.input_value(1).get_node()
        if source.get_type_name() == "Convert":
            source = source.input_value(0).get_node()
        weight = source.get_friendly_name() if source.get_type_name() == "Constant" else None
        matmuls.append((op.get_friendly_name(), weight))
    return resolve(matmuls, roles)


def _calibrate(model: Any, loaded: LoadedTokenizer, spec: ModelSpec, keep_fp32: tuple[str, ...]) -> Any:
    """``model`` with int8 MatMuls whose activation ranges come from the calibration texts; the MatMuls
    of the roles in ``keep_fp32`` stay fp32."""
    # NNCF reports usage through openvino-telemetry unless NNCF_CI is set when it is first imported;
    # an export sends nothing, and the variable is gone again afterwards.
    with env_var("NNCF_CI", "1"):
        nncf = require("nncf", "openvino", "int8 on OpenVINO")
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )

    feeds = _calibration_feeds(model, loaded, spec)
    ignored = nncf.IgnoredScope(names=kept_matmuls(model, keep_fp32)) if keep_fp32 else None
    with quiet("nncf"), quiet_console():
        return nncf.quantize(
            model,
            nncf.Dataset(feeds),
            preset=nncf.QuantizationPreset.MIXED,
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(feeds),
            ignored_scope=ignored,
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1)
            ),
        )
