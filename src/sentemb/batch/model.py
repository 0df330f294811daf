"""The model as the job's manifest records it, described without a backend, and each actor's check of it.

The driver never builds an encoder: it resolves the model, reads its folder and hashes its weights
(:func:`describe_model`), so that ``--precision fp16 --num-gpus 1`` can start on a driver without a
GPU and ``--backend auto`` is resolved for the actors' device, not the driver's (no export runs on
the driver). Each actor builds its encoder and checks that it runs what the header says
(:func:`check_worker`): the same weights, size, pooling, backend and precision.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sentemb.backends import resolve_choice
from sentemb.config import EncoderConfig, LongText, Precision
from sentemb.errors import ConfigError, IntegrityError, ModelNotFoundError
from sentemb.models import open_model
from sentemb.models.resolve import sha256_file
from sentemb.prompts import resolve_prompt

if TYPE_CHECKING:
    from sentemb.encoder import Encoder

# Facts an actor's encoder must share with the header the driver wrote.
CHECKED = ("sha256", "dim", "pooling", "normalize", "max_length", "backend", "precision")
# Where transformers' configs keep the size of a token embedding, by model family.
_DIM_KEYS = ("hidden_size", "d_model", "dim", "n_embd")


def worker_config(config: EncoderConfig, num_gpus: float) -> EncoderConfig:
    """The config each actor loads: device 'auto' becomes the device the actor is given, and
    ``backend='auto'`` is resolved for that device (on the driver too, so the header names it)."""
    device = config.device
    if device == "auto":
        device = "cuda" if num_gpus > 0 else "cpu"
    # long_text="error": a too-long text becomes a bad row (found by truncation), not a failed shard
    long_text = LongText.TRUNCATE if config.long_text is LongText.ERROR else config.long_text
    return resolve_choice(config.replace(device=device, show_progress=False, long_text=long_text))


def describe_model(
    config: EncoderConfig, num_gpus: float, *, prompt_name: str | None = None, prompt: str | None = None
) -> dict[str, object]:
    """What the vectors will be (model, weights' sha256, dim after Dense layers and truncate_dim, pooling,
    the prompt text, ...) without loading a backend."""
    worker = worker_config(config, num_gpus)
    if worker.precision is Precision.FP16 and not worker.device.startswith("cuda"):
        raise ConfigError("precision fp16 is for CUDA: give each actor a GPU (--num-gpus 1), or use bf16 or fp32")
    _, spec = open_model(config)
    if spec.dense:
        dim = spec.dense[-1].out_features
    else:
        dim = spec.static.width if spec.static is not None else _dim(spec.transformer_dir / "config.json")
    truncate = config.truncate_dim or spec.st.truncate_dim
    default_name = spec.st.default_prompt_name if config.default_prompt_name is None else config.default_prompt_name
    return {
        "model": config.model,
        "sha256": {p.name: sha256_file(p) for p in spec.weights},
        "dim": min(dim, truncate) if truncate else dim,
        "truncate_dim": truncate,
        "prompt_text": resolve_prompt(spec.st.prompt_dict, default_name, prompt=prompt, prompt_name=prompt_name),
        "pooling": (config.pooling or spec.pooling).value,
        "normalize": spec.normalize if config.normalize is None else config.normalize,
        "max_length": config.max_length or spec.max_length,
        "long_text": config.long_text.value,
        "chunk_overlap": config.chunk_overlap if config.long_text is LongText.CHUNK else None,
        "backend": "static" if spec.static is not None else worker.backend,
        "precision": worker.precision.value,
    }


def _dim(config_json: Any) -> int:
    try:
        values = json.loads(config_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot read {config_json}: {exc}") from None
    for key in _DIM_KEYS:
        if isinstance(values.get(key), int):
            return int(values[key])
    raise ModelNotFoundError(f"{config_json} names no embedding size ({', '.join(_DIM_KEYS)}); is it a text model?")


def check_worker(encoder: Encoder, config: EncoderConfig, header: dict, num_gpus: float) -> None:
    """Raise :class:`IntegrityError` unless this actor's encoder runs what the header promises."""
    got = describe_model(config, num_gpus)  # this node's files and choice of backend
    got.update(dim=encoder.dim, backend=_text(encoder.backend), precision=_text(encoder.config.precision))
    for key in CHECKED:
        if got[key] != header[key]:
            raise IntegrityError(
                f"this worker loaded {config.model!r} with {key}={got[key]!r} but the job's header has "
                f"{header[key]!r}; install the same model files and packages on every node, or pass "
                f"--backend and --precision explicitly"
            )


def _text(value: object) -> str:
    return str(getattr(value, "value", value))
