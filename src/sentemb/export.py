"""Export a model once and keep it: torch -> ONNX, graph fusion or OpenVINO IR, int8, a checked cache.

Cache layout (root: ``$SENTEMB_CACHE``, else ``$XDG_CACHE_HOME/sentemb``, else ``~/.cache/sentemb``)::

    <root>/<runtime>/<model_type>-<precision>-<key[:20]>/
        model.onnx       runtime onnx: the graph, fp32 or int8 weights (signed, per output channel)
        model.xml/.bin   runtime openvino: the IR, fp32 or int8 (static: calibrated activations);
                         BERT-family graphs are packed (linear layers on the real tokens only)
        tokenizer.json   the model's fast tokenizer, so loading needs neither transformers nor torch
        manifest.json    written last: what the key was made of, tokenizer facts, sha256 of each file

The key hashes the model's own files (config, weights, tokenizer), the export recipe, the calibration
texts (int8 OpenVINO) and the versions of sentemb, torch, transformers and the runtime's packages:
a change to any of them makes a new export.
A folder whose files no longer match its manifest (a damaged or partial write) is rebuilt. Exports are
written to a temporary folder and renamed into place, so concurrent processes never see half a folder.
The model's own folder is only read (it may be read-only).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentemb.config import Precision
from sentemb.errors import BackendError, ConfigError, require
from sentemb.models.resolve import CACHE_ENV, cache_root, sha256_file

if TYPE_CHECKING:
    from sentemb.models import ModelSpec
    from sentemb.tokenize import LoadedTokenizer

log = logging.getLogger("sentemb")

# Bump when the export recipe changes in a way that changes the files.
RECIPE = 1
OPSET = 17
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
# The model files of each runtime (the first is the one a session opens).
MODEL_FILES = {"onnx": ("model.onnx",), "openvino": ("model.xml", "model.bin")}
EXPORTABLE = (Precision.FP32, Precision.INT8)
# Files of a model folder that decide its vectors; everything else (README, ONNX dumps) is ignored.
_KEY_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".bin", ".pt", ".pth")
_VERSIONED = {
    "onnx": ("sentemb", "torch", "transformers", "onnx", "onnxruntime"),
    "openvino": ("sentemb", "torch", "transformers", "onnx", "openvino", "nncf"),
}
# Texts whose activations set the int8 scales of the OpenVINO export (static quantisation).
CALIBRATION_FILE = Path(__file__).with_name("calibration.txt")
# ORT's transformer fusions by model type (attention, skip layer norm, bias + GELU); others run unfused.
_FUSION_TYPES = {"bert": "bert", "roberta": "bert", "distilbert": "bert", "bart": "bart"}
# Model types built from BERT's layer stack. Their OpenVINO graph is "packed": every linear layer runs
# on the real tokens only and padding is gathered back in just for attention (a few % of the work),
# so padding costs almost nothing (micro-batches of 40 mixed-length texts: 0.84 -> 0.95 of the rate
# of one length-sorted call).
PACKED_TYPES = ("bert", "roberta")


@dataclass(frozen=True)
class Exported:
    """A checked export folder and what its manifest says about the tokenizer."""

    folder: Path
    uses_type_ids: bool
    pad_id: int
    runtime: str = "onnx"

    @property
    def model(self) -> Path:
        return self.folder / MODEL_FILES[self.runtime][0]

    @property
    def tokenizer(self) -> Path:
        return self.folder / TOKENIZER_FILE

    def load_tokenizer(self) -> LoadedTokenizer:
        """The tokenizer saved beside the model (no transformers import)."""
        from tokenizers import Tokenizer

        from sentemb.tokenize import LoadedTokenizer, prepare_tokenizer

        tokenizer = prepare_tokenizer(Tokenizer.from_file(str(self.tokenizer)))
        return LoadedTokenizer(tokenizer, self.uses_type_ids, self.pad_id)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def key_inputs(spec: ModelSpec, precision: Precision, runtime: str = "onnx") -> dict[str, Any]:
    """Everything an export depends on; its sha256 is the cache key."""
    files = sorted(p for p in spec.transformer_dir.iterdir() if p.is_file() and p.suffix in _KEY_SUFFIXES)
    inputs = {
        "recipe": RECIPE,
        "opset": OPSET,
        "precision": precision.value,
        "model_type": spec.model_type,
        "files": {p.name: sha256_file(p) for p in files},
        "versions": {name: _version(name) for name in _VERSIONED[runtime]},
    }
    if runtime != "onnx":  # onnx keys stay as they were, so existing caches remain valid
        inputs["runtime"] = runtime
        if precision is Precision.INT8:
            inputs["calibration"] = sha256_file(CALIBRATION_FILE)
        if spec.model_type in PACKED_TYPES:
            inputs["graph"] = "packed"
    return inputs


def cache_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def check_export(folder: Path) -> Exported | None:
    """The export in ``folder`` if its manifest is readable and every file has its recorded sha256."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        for name, digest in manifest["sha256"].items():
            if sha256_file(folder / name) != digest:
                log.warning("sentemb: %s is damaged (sha256 differs from its manifest)", folder / name)
                return None
        runtime = manifest.get("runtime", "onnx")
        if set(manifest["sha256"]) != {*MODEL_FILES[runtime], TOKENIZER_FILE}:
            return None
        return Exported(folder, bool(manifest["uses_type_ids"]), int(manifest["pad_id"]), runtime)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_export(
    spec: ModelSpec, precision: Precision, *, runtime: str = "onnx", trust_remote_code: bool = False
) -> Exported:
    """The cached export of ``spec`` at ``precision`` for ``runtime``, built (once) if missing or damaged."""
    if precision not in EXPORTABLE:
        raise ConfigError(f"exports are fp32 or int8, not {precision.value}; for bf16/fp16 use backend='torch'")
    inputs = key_inputs(spec, precision, runtime)
    key = cache_key(inputs)
    parent = cache_root() / runtime
    final = parent / f"{spec.model_type}-{precision.value}-{key[:20]}"
    found = check_export(final)
    if found is not None:
        return found
    try:
        parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".partial-", dir=parent))
        work.chmod(0o755)
    except OSError as exc:
        raise BackendError(
            f"cannot write the ONNX export cache at {parent} ({exc.strerror or exc}); "
            f"point {CACHE_ENV} at a writable folder"
        ) from None
    try:
        what = f"{runtime} ({precision.value})"
        log.info("sentemb: exporting %s to %s, once, into %s", spec.transformer_dir, what, final)
        build_export(spec, precision, work, inputs=inputs, runtime=runtime, trust_remote_code=trust_remote_code)
        if final.exists():  # damaged: replace it
            shutil.rmtree(final, ignore_errors=True)
        with contextlib.suppress(OSError):  # another process may have finished first
            os.rename(work, final)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    found = check_export(final)
    if found is None:
        raise BackendError(f"the ONNX export in {final} could not be written or read back")
    return found


def build_export(
    spec: ModelSpec,
    precision: Precision,
    out: Path,
    *,
    inputs: dict[str, Any],
    runtime: str = "onnx",
    trust_remote_code: bool = False,
) -> Exported:
    """Write the model file(s), tokenizer.json and (last) manifest.json into ``out``. Needs torch and transformers."""
    from sentemb.tokenize import load_hf_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    loaded = load_hf_tokenizer(str(spec.transformer_dir), trust_remote_code)
    (out / TOKENIZER_FILE).write_text(loaded.tokenizer.to_str(), encoding="utf-8")
    graph = out / "graph.onnx"
    files = MODEL_FILES[runtime]
    try:
        _export_torch(spec, graph, loaded.uses_type_ids, trust_remote_code, packed="graph" in inputs)
        if runtime == "openvino":
            _to_openvino(graph, out / files[0], precision, loaded, spec)
        elif precision is Precision.INT8:
            _quantize(graph, out / files[0])
        else:
            _fuse(graph, out / files[0], spec.model_type)
    finally:
        graph.unlink(missing_ok=True)
    manifest = {
        "key": cache_key(inputs),
        "inputs": inputs,
        "runtime": runtime,
        "uses_type_ids": loaded.uses_type_ids,
        "pad_id": loaded.pad_id,
        "sha256": {name: sha256_file(out / name) for name in (*files, TOKENIZER_FILE)},
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return Exported(out, loaded.uses_type_ids, loaded.pad_id, runtime)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' and quantiser's advice (warnings and root-logger lines) for one call."""
    import warnings

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _export_torch(
    spec: ModelSpec, path: Path, uses_type_ids: bool, trust_remote_code: bool, *, packed: bool = False
) -> None:
    """torch.onnx.export of the transformer (BART: its encoder) with dynamic batch and sequence axes;
    ``packed``: BERT's layers on the real tokens only (:func:`_packed_bert`)."""
    import inspect

    import torch
    from transformers import AutoModel

    # Eager attention exports as plain MatMul/Softmax, the pattern ORT's attention fusion recognises.
    model = AutoModel.from_pretrained(
        spec.transformer_dir,
        trust_remote_code=trust_remote_code,
        use_safetensors=not spec.pickle_weights,
        attn_implementation="eager",
    )
    if getattr(model.config, "is_encoder_decoder", False):
        model = model.get_encoder()
    model.eval()
    names = ["input_ids", "attention_mask"]
    if uses_type_ids and "token_type_ids" in inspect.signature(model.forward).parameters:
        names.append("token_type_ids")

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, args, strict=True)), return_dict=True).last_hidden_state

    # The packed module takes the inputs in the same order and returns last_hidden_state itself.
    module = _packed_bert(model) if packed and _absolute_positions(model.config) else LastHidden()

    # A padded row, so that no "mask is all ones" shortcut is traced into the graph.
    ids = torch.full((2, 8), 5, dtype=torch.int64)
    mask = torch.ones((2, 8), dtype=torch.int64)
    mask[1, 5:] = 0
    dummy = (ids, mask, torch.zeros_like(ids))[: len(names)]
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}
    with _quiet(), torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            module,
            dummy,
            str(path),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _absolute_positions(config: Any) -> bool:
    """BERT-family configs whose attention _packed_bert reproduces (no relative positions, no decoder)."""
    return getattr(config, "position_embedding_type", "absolute") == "absolute" and not config.is_decoder


def _packed_bert(model: Any) -> Any:
    """A module computing ``model``'s last_hidden_state with every linear layer on the real tokens.

    The tokens of all rows are gathered into one (N, H) matrix after the embeddings; only attention
    gathers them back into (B, T) rows (padding then masked as in transformers' eager attention).
    Padding positions of the output are zero.
    """
    import torch

    class PackedBert(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embeddings = model.embeddings
            self.layers = model.encoder.layer
            self.heads = model.config.num_attention_heads
            self.head_size = model.config.hidden_size // self.heads

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
        ) -> torch.Tensor:
            rows, width = input_ids.shape
            x = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
            size = x.shape[-1]
            flat = attention_mask.reshape(-1)
            real = torch.nonzero(flat).squeeze(1)  # positions of real tokens in (B*T)
            packed_row = torch.where(flat > 0, torch.cumsum(flat, 0) - 1, torch.zeros_like(flat))
            bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
            h = x.reshape(-1, size).index_select(0, real)

            def by_head(t: torch.Tensor) -> torch.Tensor:
                return t.index_select(0, packed_row).view(rows, width, self.heads, self.head_size).transpose(1, 2)

            for layer in self.layers:
                att = layer.attention.self
                q, k, v = by_head(att.query(h)), by_head(att.key(h)), by_head(att.value(h))
                scores = torch.matmul(q, k.transpose(-1, -2)) * self.head_size**-0.5 + bias
                context = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(-1, size)
                a = layer.attention.output.LayerNorm(layer.attention.output.dense(context.index_select(0, real)) + h)
                inner = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(a))
                h = layer.output.LayerNorm(layer.output.dense(inner) + a)
            return h.index_select(0, packed_row).view(rows, width, size) * attention_mask[:, :, None].to(h.dtype)

    return PackedBert().eval()


def _fuse(source: Path, target: Path, model_type: str) -> None:
    """ORT's transformer fusions where they apply (exact to ~1e-7); the plain graph otherwise."""
    fusion = _FUSION_TYPES.get(model_type)
    if fusion is None:
        shutil.copyfile(source, target)
        return
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    with _quiet():
        optimized = optimizer.optimize_model(
            str(source), model_type=fusion, optimization_options=FusionOptions(fusion), opt_level=0
        )
        optimized.save_model_to_file(str(target))


def _quantize(source: Path, target: Path) -> None:
    """Dynamic int8: signed per-output-channel MatMul weights (what reaches AVX512-VNNI), uint8 activations.

    Embeddings, layer norms, softmax and GELU stay fp32; ONNX Runtime fuses the rest when it loads.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(
            source,
            target,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
        )


def _to_openvino(graph: Path, target: Path, precision: Precision, loaded: LoadedTokenizer, spec: ModelSpec) -> None:
    """The ONNX graph as OpenVINO IR in fp32 (bf16 is chosen when it is compiled), or int8.

    int8 is static: NNCF measures activation ranges on the calibration texts and puts int8 on
    every MatMul (u8 activations x signed per-channel weights: AVX512-VNNI/AMX). Smooth-quant is
    off: it raises the mean cosine a little but lets outliers fall to 0.88 (0.97 without it).
    """
    ov = require("openvino", "openvino", "the OpenVINO backend")
    model = ov.Core().read_model(str(graph))
    if precision is Precision.INT8:
        model = _calibrate(model, loaded, spec)
    ov.save_model(model, str(target), compress_to_fp16=False)  # fp16 weights would break exactness


def _calibrate(model: Any, loaded: LoadedTokenizer, spec: ModelSpec) -> Any:
    """``model`` with int8 MatMuls whose activation ranges come from the calibration texts."""
    from sentemb.batching import pad, plan_batches
    from sentemb.config import LongText
    from sentemb.tokenize import TokenizerSpec, tokenize

    # NNCF reports usage through openvino-telemetry unless NNCF_CI is set; an export sends nothing.
    os.environ.setdefault("NNCF_CI", "1")
    nncf = require("nncf", "openvino", "int8 on OpenVINO")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    texts = [line for line in CALIBRATION_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    token_spec = TokenizerSpec(loaded.tokenizer, spec.max_length, spec.lowercase)
    sequences, _ = tokenize(token_spec, texts, LongText.TRUNCATE, 0, 0)
    names = {item.get_any_name() for item in model.inputs}
    feeds = []
    for rows in plan_batches([len(s.ids) for s in sequences], 8, 8 * 512):
        chosen = [sequences[r] for r in rows]
        batch = pad([s.ids for s in chosen], [s.type_ids for s in chosen], loaded.pad_id, loaded.uses_type_ids)
        feeds.append(batch.feed(names))
    with _quiet():
        return nncf.quantize(
            model,
            nncf.Dataset(feeds),
            preset=nncf.QuantizationPreset.MIXED,
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(feeds),
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1)
            ),
        )


def export_to(
    spec: ModelSpec, precision: Precision, out: Path, *, runtime: str = "onnx", trust_remote_code: bool = False
) -> Exported:
    """Copy the (cached, built if needed) export of ``spec`` into the folder ``out``."""
    exported = ensure_export(spec, precision, runtime=runtime, trust_remote_code=trust_remote_code)
    out.mkdir(parents=True, exist_ok=True)
    for name in (*MODEL_FILES[runtime], TOKENIZER_FILE, MANIFEST_FILE):
        shutil.copyfile(exported.folder / name, out / name)
    copied = check_export(out)
    if copied is None:
        raise BackendError(f"the export copied into {out} does not match its manifest")
    return copied
