"""The model as the job's manifest records it, described without a backend, and each actor's check of it.

The driver never builds an encoder: it resolves the model, reads its folder and hashes its weights
(:func:`describe_job_model`), so that ``--precision fp16 --num-gpus 1`` can start on a driver without a
GPU and ``--backend auto`` is resolved for the actors' device, not the driver's (no export runs on
the driver). Each actor builds its encoder and checks that it runs what the header says
(:func:`check_worker`): the same weights, size, pooling, backend and precision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sentemb.config import EncoderConfig, LongText, Precision
from sentemb.errors import ConfigError, IntegrityError
from sentemb.machine import Machine
from sentemb.plan import describe_model, open_model, resolve
from sentemb.prompts import resolve_prompt

if TYPE_CHECKING:
    from sentemb.encoder import Encoder
    from sentemb.models import ModelSpec

# Facts an actor's encoder must share with the header the driver wrote.
CHECKED = ("sha256", "dim", "pooling", "normalize", "max_length", "backend", "precision")


def worker_config(
    config: EncoderConfig, num_gpus: float, machine: Machine, spec: ModelSpec | None = None
) -> EncoderConfig:
    """The config each actor loads: device 'auto' becomes the device the actor is given, and
    ``backend='auto'`` is resolved for that device (on the driver too, so the header names it); with the
    model's ``spec``, a folder that ships only a graph resolves to the runtime that runs it."""
    device = config.device
    if device == "auto":
        device = "cuda" if num_gpus > 0 else "cpu"
    # long_text="error": a too-long text becomes a bad row (found by truncation), not a failed shard
    long_text = LongText.TRUNCATE if config.long_text is LongText.ERROR else config.long_text
    worker, _ = resolve(config.replace(device=device, show_progress=False, long_text=long_text), machine, spec)
    return worker


def describe_job_model(
    config: EncoderConfig, num_gpus: float, *, prompt_name: str | None = None, prompt: str | None = None
) -> dict[str, object]:
    """What the vectors will be (model, weights' sha256, dim after Dense layers and truncate_dim, pooling,
    the prompt text, ...) without loading a backend: :func:`sentemb.plan.describe_model` for the actors'
    device, plus the prompt's text."""
    machine = Machine.here()
    resolved, spec = open_model(config, machine)
    worker = worker_config(config, num_gpus, machine, spec)
    if worker.precision is Precision.FP16 and not worker.device.startswith("cuda"):
        raise ConfigError("precision fp16 is for CUDA: give each actor a GPU (--num-gpus 1), or use bf16 or fp32")
    facts = describe_model(worker, resolved, spec, machine)
    return {
        "model": facts.model,
        "sha256": facts.sha256,
        "dim": facts.dim,
        "truncate_dim": facts.matryoshka,
        "prompt_text": resolve_prompt(facts.prompts, facts.prompt, prompt=prompt, prompt_name=prompt_name),
        "pooling": facts.pooling,
        "normalize": facts.normalize,
        "max_length": facts.max_length,
        "long_text": config.long_text.value,
        "chunk_overlap": config.chunk_overlap if config.long_text is LongText.CHUNK else None,
        "backend": facts.backend,
        "precision": facts.precision,
    }


def check_worker(encoder: Encoder, config: EncoderConfig, header: dict, num_gpus: float) -> None:
    """Raise :class:`IntegrityError` unless this actor's encoder runs what the header promises."""
    got = describe_job_model(config, num_gpus)  # this node's files and choice of backend
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
