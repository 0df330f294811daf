"""The modules of a sentence-transformers folder (modules.json), read in order, all or nothing.

sentemb runs: Transformer, then Pooling (one mode, ``include_prompt``), then any number of Dense
layers, then at most one Normalize; or StaticEmbedding (a table of token vectors, averaged: it
gives one vector itself, so no Pooling follows), then Dense layers and Normalize. Every other
module type or layout is refused with :class:`UnsupportedModelError` naming the module, its folder
and what is supported: a module is never silently dropped (that would change the vectors).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sentemb.config import Pooling
from sentemb.errors import ModelNotFoundError, UnsafeModelError, UnsupportedModelError

SUPPORTED = (
    "Transformer, Pooling, Dense (any number) and Normalize (last), in that order; or StaticEmbedding, "
    "Dense and Normalize"
)
# sentence-transformers' pooling mode names -> sentemb's, in its legacy key order (cls, max, mean, ...).
POOLING_MODES = {
    "cls": Pooling.CLS,
    "max": Pooling.MAX,
    "mean": Pooling.MEAN,
    "mean_sqrt_len_tokens": Pooling.MEAN_SQRT_LEN,
    "weightedmean": Pooling.WEIGHTED_MEAN,
    "lasttoken": Pooling.LAST_TOKEN,
}
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
ST_POOLING_NAMES = {mode: name for name, mode in POOLING_MODES.items()}
# Activations as sentence-transformers names them in a Dense config (``fullname`` of the module).
ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": "Tanh",
    "torch.nn.modules.linear.Identity": "Identity",
    "torch.nn.modules.activation.ReLU": "ReLU",
    "torch.nn.modules.activation.GELU": "GELU",
    "torch.nn.modules.activation.Sigmoid": "Sigmoid",
    "torch.nn.modules.activation.SiLU": "SiLU",
}
ACTIVATION_NAMES = {short: full for full, short in ACTIVATIONS.items()}


@dataclass(frozen=True, eq=False)
class DenseLayer:
    """One Dense module: ``activation(x @ weight.T + bias)`` (+ ``x`` or ``x @ residual.T``), float32."""

    path: str  # its folder inside the model, e.g. "2_Dense"
    weight: np.ndarray  # (out_features, in_features)
    bias: np.ndarray | None  # (out_features,)
    activation: str  # a key of ACTIVATION_NAMES: "Tanh", "Identity", ...
    use_residual: bool = False
    residual: np.ndarray | None = None  # (out, in) when use_residual and in != out

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True)
class Pipeline:
    """What modules.json asks for, after the transformer."""

    transformer_path: str  # the first module's folder: the Transformer's, or the StaticEmbedding's
    pooling: Pooling | None  # None: no Pooling module (a plain transformers folder): mean
    include_prompt: bool
    dense: tuple[DenseLayer, ...]
    normalize: bool
    static: bool = False  # the first module is a StaticEmbedding


# Where transformers' configs keep the width of a token embedding, by model family.
WIDTH_KEYS = ("hidden_size", "d_model", "dim", "n_embd")


def hidden_width(config_json: Path) -> int:
    """The transformer's token-embedding width from its ``config.json``; ModelNotFoundError if it names none."""
    values = read_json(config_json)
    for key in WIDTH_KEYS:
        if isinstance(values.get(key), int):
            return int(values[key])
    raise ModelNotFoundError(f"{config_json} names no embedding size ({', '.join(WIDTH_KEYS)}); is it a text model?")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot read {path}: {exc}") from None


def read_pipeline(root: Path, modules: list[dict], *, allow_pickle: bool) -> Pipeline:
    """Read every module of ``modules.json`` in order; refuse what sentemb does not run."""
    kinds = [(str(m.get("type", "")).rsplit(".", 1)[-1], str(m.get("path", ""))) for m in modules]
    if not kinds:
        return Pipeline("", None, True, (), False)
    static = kinds[0][0] == "StaticEmbedding"
    allowed = {0: {"StaticEmbedding"}} if static else {0: {"Transformer"}, 1: {"Pooling"}}
    pooling: Pooling | None = None
    include_prompt, width = True, None
    dense: list[DenseLayer] = []
    normalize = False
    for position, (kind, path) in enumerate(kinds):
        expected = allowed.get(position, {"Dense", "Normalize"})
        ours = str(modules[position].get("type", "")).startswith("sentence_transformers.")
        if kind not in expected or normalize or not ours:
            where = root / path if path else root
            raise UnsupportedModelError(
                f"{root}: module {position} is {modules[position].get('type')!r} (folder {where}), which sentemb "
                f"does not run there; it runs {SUPPORTED}. Use sentence-transformers for this model."
            )
        if kind == "Pooling":
            pooling, include_prompt, width = _read_pooling(root / path)
        elif kind == "Dense":
            dense.append(_read_dense(root, path, allow_pickle))
        elif kind == "Normalize":
            normalize = True
    _check_chain(root, width, dense)
    return Pipeline(kinds[0][1], pooling, include_prompt, tuple(dense), normalize, static)


def _read_pooling(folder: Path) -> tuple[Pooling, bool, int | None]:
    config = read_json(folder / "config.json")
    mode = config.get("pooling_mode")
    if mode is None:  # the boolean keys older sentence-transformers write
        chosen = [name for key, name in LEGACY_POOLING_KEYS.items() if config.get(key)]
        mode = chosen[0] if len(chosen) == 1 else (tuple(chosen) or "mean")
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if not isinstance(mode, str) or mode not in POOLING_MODES:
        raise UnsupportedModelError(
            f"{folder}: pooling mode {mode!r} is not supported; sentemb runs exactly one of "
            f"{', '.join(POOLING_MODES)} (sentence-transformers can concatenate several)"
        )
    width = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    return POOLING_MODES[mode], bool(config.get("include_prompt", True)), int(width) if width else None


def _read_dense(root: Path, path: str, allow_pickle: bool) -> DenseLayer:
    folder = root / path
    config = read_json(folder / "config.json")
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, "sentence_embedding") != "sentence_embedding":
            raise UnsupportedModelError(
                f"{folder}: Dense {key}={config[key]!r}; sentemb runs Dense on the sentence embedding only"
            )
    name = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if name not in ACTIVATIONS:
        raise UnsupportedModelError(
            f"{folder}: Dense activation {name!r} is not supported; sentemb runs "
            f"{', '.join(ACTIVATIONS)}"
        )
    tensors = _read_weights(folder, allow_pickle)
    in_f, out_f = int(config.get("in_features", 0)), int(config.get("out_features", 0))
    use_bias, residual = bool(config.get("bias", True)), bool(config.get("use_residual", False))
    want: dict[str, tuple[int, ...]] = {"linear.weight": (out_f, in_f)}
    if use_bias:
        want["linear.bias"] = (out_f,)
    if residual and in_f != out_f:
        want["residual.weight"] = (out_f, in_f)
    got = {key: tuple(value.shape) for key, value in tensors.items()}
    if any(got.get(key) != shape for key, shape in want.items()) or set(got) - set(want):
        raise UnsupportedModelError(
            f"{folder}: Dense weights do not fit its config (in_features={in_f}, out_features={out_f}, "
            f"bias={use_bias}): expected {want}, found {got}; the folder is damaged or was edited by hand"
        )
    return DenseLayer(
        path=path,
        weight=tensors["linear.weight"],
        bias=tensors.get("linear.bias"),
        activation=ACTIVATIONS[name],
        use_residual=residual,
        residual=tensors.get("residual.weight"),
    )


def _read_weights(folder: Path, allow_pickle: bool) -> dict[str, np.ndarray]:
    safe = folder / "model.safetensors"
    if safe.is_file():
        from safetensors.numpy import load_file

        try:
            return {key: value.astype(np.float32) for key, value in load_file(safe).items()}
        except (TypeError, ValueError):  # bf16 has no numpy dtype: read it with torch
            from safetensors.torch import load_file as load_torch

            return {key: value.float().numpy() for key, value in load_torch(safe).items()}
    pickled = folder / "pytorch_model.bin"
    if not pickled.is_file():
        raise ModelNotFoundError(f"{folder} holds no Dense weights (model.safetensors or pytorch_model.bin)")
    if not allow_pickle:
        raise UnsafeModelError(
            f"{pickled} is a pickle file, which can run arbitrary code when loaded; convert it to "
            "safetensors, or pass allow_pickle=True (CLI: --allow-pickle) only if you trust the source"
        )
    import torch

    state = torch.load(pickled, map_location="cpu", weights_only=True)
    return {key: value.float().numpy() for key, value in state.items()}


def _check_chain(root: Path, width: int | None, dense: list[DenseLayer]) -> None:
    """Each Dense takes what the step before it gives."""
    previous = width
    for layer in dense:
        if previous is not None and layer.in_features != previous:
            raise UnsupportedModelError(
                f"{root / layer.path}: Dense takes {layer.in_features} numbers but the step before it gives "
                f"{previous}; the folder's modules do not fit together"
            )
        previous = layer.out_features


def check_backbone_width(root: Path, hidden: int, dense: tuple[DenseLayer, ...]) -> int:
    """The width of the final vectors; the first Dense must take the transformer's width."""
    if dense and dense[0].in_features != hidden:
        raise UnsupportedModelError(
            f"{root / dense[0].path}: Dense takes {dense[0].in_features} numbers but the transformer gives "
            f"{hidden}; the folder's modules do not fit together"
        )
    return dense[-1].out_features if dense else hidden
