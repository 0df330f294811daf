"""What an export is made from and how: a frozen :class:`Recipe` whose hash is the cache key.

The builder reads the recipe (graph layout, fusion, quantisation), so what is hashed is exactly what
is built: a change to the model's files, the recipe, the calibration texts or a library version
makes a new export.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from sentemb.config import Precision
from sentemb.errors import ConfigError
from sentemb.models.resolve import sha256_file

if TYPE_CHECKING:
    from sentemb.models import ModelSpec

# Bump when the builder writes different files for the same recipe fields.
SCHEMA = 3  # the layout of exports; a new one builds every export again
OPSET = 17
RUNTIMES = ("onnx", "openvino")
RUNTIME_LABELS = {"onnx": "ONNX", "openvino": "OpenVINO"}
# The model files of each runtime (the first is the one a session opens).
MODEL_FILES = {"onnx": ("model.onnx",), "openvino": ("model.xml", "model.bin")}
EXPORTABLE = (Precision.FP32, Precision.INT8)
# Texts whose activations set the int8 scales of the OpenVINO export (static quantisation).
CALIBRATION_FILE = Path(__file__).resolve().parents[1] / "calibration.txt"
# Files of a model folder that decide its vectors; everything else (README, ONNX dumps) is ignored.
_KEY_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".bin", ".pt", ".pth")
_VERSIONED = {
    "onnx": ("sentemb", "torch", "transformers", "onnx", "onnxruntime"),
    "openvino": ("sentemb", "torch", "transformers", "onnx", "openvino", "nncf"),
}
# ORT's transformer fusions by model type (attention, skip layer norm, bias + GELU); others run unfused.
FUSION_TYPES = {"bert": "bert", "roberta": "bert", "distilbert": "bert", "bart": "bart"}
# Model types built from BERT's layer stack. Their OpenVINO graph is "packed": every linear layer runs
# on the real tokens only and padding is gathered back in just for attention (a few % of the work),
# so padding costs almost nothing (micro-batches of 40 mixed-length texts: 0.84 -> 0.95 of the rate
# of one length-sorted call).
PACKED_TYPES = ("bert", "roberta")
# How int8 is made, per runtime: ONNX Runtime's dynamic quantisation (signed per-channel MatMul
# weights, uint8 activations measured per batch); NNCF's static quantisation on OpenVINO (ranges
# calibrated once, mixed preset, no smooth-quant).
QUANTIZATION = {"onnx": "dynamic-qint8-per-channel", "openvino": "static-nncf-mixed"}
# The MatMuls an int8 export keeps fp32, by model kind (roles of :mod:`sentemb.export.keep_fp32`);
# a kind not listed quantises every MatMul. Sparse (SPLADE): with every MatMul int8, 89.5-89.7% of each
# vector's 50 heaviest ids were those of fp32 (a MiniLM-L6-shaped SPLADE model, 200-1,000 STS sentences,
# benchmarks/sparse_bench.py); with the feed-forward layers fp32, 95.2-95.5%, and the masked-LM head (the
# vocabulary projection, most of the work) still int8.
KEEP_FP32: dict[str, tuple[str, ...]] = {"rerank": ("feed-forward",), "sparse": ("feed-forward",)}
# What writes the graph: torch.onnx where torch is installed, else (BERT family) onnx.helper.
BUILDER = "torch.onnx"


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """Everything the files of one export depend on. ``key`` (its sha256) names the cache entry."""

    model_type: str
    files: tuple[tuple[str, str], ...]  # (name, sha256) of the model folder's files that decide the vectors
    runtime: str  # "onnx" or "openvino"
    precision: Precision  # fp32 or int8 (OpenVINO's bf16 compiles the fp32 IR)
    graph: str = "padded"  # "packed": linear layers on the real tokens only; "first-token": see export.first_token
    # the graph's output: token embeddings ("hidden"), a classifier's "logits" or SPLADE's weights
    # ("splade-<pooling>-<activation>")
    head: str = "hidden"
    fusion: str | None = None  # ORT optimizer model type applied to the fp32 ONNX graph
    quantization: str | None = None  # one of QUANTIZATION's values for int8
    calibration: str | None = None  # sha256 of the calibration texts (static int8)
    fp32_matmuls: tuple[str, ...] = ()  # roles of the MatMuls int8 leaves in fp32 (sorted; none: all int8)
    builder: str = BUILDER  # what writes the graph
    opset: int = OPSET
    versions: tuple[tuple[str, str], ...] = field(default=())
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        from sentemb.export.keep_fp32 import check_roles

        object.__setattr__(self, "fp32_matmuls", check_roles(self.fp32_matmuls))

    def to_json(self) -> dict[str, object]:
        """The recipe as it is hashed and written into the manifest; ``fp32_matmuls`` only when some
        MatMuls stay fp32, so the keys of the exports that quantise every MatMul are the ones before it."""
        kept = {"fp32_matmuls": list(self.fp32_matmuls)} if self.fp32_matmuls else {}
        return kept | {
            "schema": self.schema,
            "model_type": self.model_type,
            "files": dict(self.files),
            "runtime": self.runtime,
            "precision": self.precision.value,
            "graph": self.graph,
            "head": self.head,
            "fusion": self.fusion,
            "quantization": self.quantization,
            "calibration": self.calibration,
            "builder": self.builder,
            "opset": self.opset,
            "versions": dict(self.versions),
        }

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    @property
    def folder_name(self) -> str:
        return f"{self.model_type}-{self.precision.value}-{self.key[:20]}"

    @property
    def label(self) -> str:
        """The runtime's name in messages: ONNX or OpenVINO."""
        return RUNTIME_LABELS[self.runtime]


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _packs(spec: ModelSpec) -> bool:
    """BERT-family models whose attention the packed graph reproduces."""
    return spec.model_type in PACKED_TYPES and plain_encoder(spec)


def plain_encoder(spec: ModelSpec) -> bool:
    """Absolute positions (relative ones add terms to the attention scores) and no decoder: the attention
    that sentemb's packed and first-token graphs compute themselves."""
    try:
        config = json.loads((spec.transformer_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    positions = config.get("position_embedding_type", "absolute")
    return positions == "absolute" and not config.get("is_decoder", False)


def _graph(spec: ModelSpec, head: str, packs: bool) -> str:
    """padded, packed (OpenVINO embeddings of the BERT family) or first-token (cross-encoders of the
    BERT family: the last layer on the token the head reads)."""
    from sentemb.export import first_token

    if head == "logits" and first_token.covers(spec):
        return "first-token"
    return "packed" if packs and head == "hidden" and _packs(spec) else "padded"


def recipe_for(spec: ModelSpec, precision: Precision, runtime: str = "onnx") -> Recipe:
    """The recipe sentemb builds for ``spec`` at ``precision`` on ``runtime``."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime={runtime!r} is not valid; choose one of {', '.join(map(repr, RUNTIMES))}")
    if precision not in EXPORTABLE:
        raise ConfigError(f"exports are fp32 or int8, not {precision.value}; for bf16/fp16 use backend='torch'")
    folder = spec.transformer_dir
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _KEY_SUFFIXES)
    int8 = precision is Precision.INT8
    openvino = runtime == "openvino"
    builder = choose_builder(spec)
    helper = builder != BUILDER
    head = "logits" if spec.task == "rerank" else "hidden"
    if spec.sparse is not None:  # the MLM head and SPLADE's pooling, inside the graph
        head = f"splade-{spec.sparse.splade.pooling}-{spec.sparse.splade.activation}"
    versioned = [name for name in _VERSIONED[runtime] if not (helper and name in ("torch", "transformers"))]
    return Recipe(
        model_type=spec.model_type,
        files=tuple((p.name, sha256_file(p)) for p in files),
        runtime=runtime,
        precision=precision,
        graph=_graph(spec, head, openvino and not helper),
        head=head,
        fusion=None if int8 or openvino or helper else FUSION_TYPES.get(spec.model_type),
        quantization=QUANTIZATION[runtime] if int8 else None,
        calibration=sha256_file(CALIBRATION_FILE) if int8 and openvino else None,
        fp32_matmuls=KEEP_FP32.get(spec.task, ()) if int8 else (),
        versions=tuple((name, version(name)) for name in versioned),
        builder=builder,
    )


def choose_builder(spec: ModelSpec) -> str:
    """torch.onnx where torch is installed; else the torch-free builder, or a one-line refusal naming the extra."""
    from sentemb.extras import torch_installed

    if torch_installed():
        return BUILDER
    from sentemb.export import onnx_builder

    if spec.task != "embedding" or not onnx_builder.covers(spec):
        raise ConfigError(onnx_builder.needs_torch(spec))
    return onnx_builder.NAME
