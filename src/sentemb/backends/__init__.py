"""The backend seam: a padded token batch in, a (B, D) float32 matrix out, as the backend's head says.

The head (:mod:`sentemb.heads`) is what differs between model kinds: pooled token embeddings plus the
model's Dense layers (pooled where they lie: numpy on the CPU, torch on a GPU, so that only (B, D)
crosses back to the host), or a classification head's logits computed inside the graph. Everything
else (tokenising, batching, post-processing) lives in the model kind, so each backend stays one small
class that serves every kind.
``create_backend`` picks the implementation; ``backend='auto'`` on the CPU is chosen by measurement
(:func:`choose_backend`, :mod:`sentemb.backends.choice`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from sentemb.errors import ConfigError
from sentemb.export.recipe import KEEP_FP32
from sentemb.plan import BACKEND_ENV, on_gpu, resolve

if TYPE_CHECKING:
    from sentemb.backends.choice import Choice
    from sentemb.batching import TokenBatch
    from sentemb.config import EncoderConfig
    from sentemb.heads import Head
    from sentemb.machine import Machine
    from sentemb.models import ModelSpec
    from sentemb.tokenize import LoadedTokenizer

log = logging.getLogger("sentemb")


class Backend(Protocol):
    """What the encoder needs from a backend."""

    name: str  # "torch", "onnx", "openvino" or "static"
    device: str  # "cpu", "cuda", "cuda:1"
    dim: int
    # How many embed() calls pay off at once (OpenVINO's streams, ONNX Runtime's runs on the CPU); the
    # encoder keeps that many in flight.
    streams: int
    threads: int | None  # threads per batch where sentemb sets them, None where the runtime chooses
    graph: str | None  # the ONNX / OpenVINO file that runs; None on torch
    max_padding: float  # padding a batch may carry, a share of its real tokens (what padding costs it)
    # The backend's own tokenizer (e.g. cached beside an ONNX export), or None for the model folder's.
    tokenizer: LoadedTokenizer | None

    def run(self, batch: TokenBatch) -> np.ndarray:
        """The head's output (B, dim) as float32 for one padded batch (padding never counts)."""
        ...


def cuda_fallback(requested: str, available: bool) -> str:
    """Resolve 'auto'/'cuda' against what the machine has; warn loudly on a fallback."""
    if requested == "auto":
        return "cuda" if available else "cpu"
    if requested.startswith("cuda") and not available:
        message = f"device={requested!r} was asked for but CUDA is not available here; running on the CPU"
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        log.warning(message)
        return "cpu"
    return requested


def choose_backend(
    spec: ModelSpec,
    config: EncoderConfig,
    run: Callable[[EncoderConfig, Backend], None],
    *,
    machine: Machine,
    head: Head,
    clock: Callable[[], float] | None = None,
) -> tuple[EncoderConfig, Backend, Choice | None]:
    """The config and backend that will run, and on the CPU with ``backend='auto'`` the measured choice.

    ``$SENTEMB_BACKEND`` (or an explicit ``backend=``) overrides the measurement. On the CPU each
    installed candidate for the precision is timed by ``run`` (one pass over the built-in sample)
    on the first load of this (model, precision) on this machine; the winner is cached
    (:mod:`sentemb.backends.choice`). GPU, fp16 and emulated bf16 keep :func:`sentemb.plan.resolve`'s rule.
    """
    from sentemb.backends import choice as measured
    from sentemb.export.cache import export_root
    from sentemb.export.recipe import version
    from sentemb.models.resolve import sha256_file

    if spec.static is not None:  # a table lookup: nothing to choose
        return config, create_backend(spec, config, machine, head), None
    override = os.environ.get(BACKEND_ENV, "").strip()
    if config.backend == "auto" and override and override != "auto":
        config = config.replace(backend=override)  # validated by EncoderConfig
    ruled, _ = resolve(config, machine, spec)
    if config.backend != "auto" or (on_gpu(config, machine) and ruled.backend == "torch"):
        return ruled, create_backend(spec, ruled, machine, head), None
    precision = measured.precision_name(ruled.precision)
    candidates = _candidates(spec, config, precision, machine)
    if len(candidates) < 2:
        return ruled, create_backend(spec, ruled, machine, head), None
    from sentemb.models.prebuilt import graph_files

    # a folder that ships only its graph (no weights) is told apart by the graph's bytes
    weights = [sha256_file(p) for p in spec.weights or graph_files(spec.transformer_dir)]
    kept = KEEP_FP32.get(spec.task, ()) if precision == "int8" else ()
    key = measured.choice_key(
        weights, precision, measured.runtime_versions(version), machine.facts(), head.graph_head, fp32_matmuls=kept
    )
    path = measured.choice_path(export_root(config.export_dir), key)
    cached = measured.read_cached(path, key, candidates)
    if cached is not None:
        chosen = measured.candidate_config(ruled, cached.backend)
        return chosen, create_backend(spec, chosen, machine, head), cached

    def build(label: str) -> Backend:
        return create_backend(spec, measured.candidate_config(ruled, label), machine, head)

    def timed(label: str, backend: Backend) -> None:
        run(measured.candidate_config(ruled, label), backend)

    found, backend = measured.measure(candidates, build, timed, precision=precision, key=key,
                                      clock=clock or measured.time.perf_counter)  # fmt: skip
    found = measured.Choice(found.backend, found.precision, found.rates, True, key, str(path), found.errors)
    measured.write_cached(path, found)
    log.info("sentemb: backend='auto' measured %s and chose %s", found.rates, found.backend)
    return measured.candidate_config(ruled, found.backend), backend, found


def _candidates(spec: ModelSpec, config: EncoderConfig, precision: str, machine: Machine) -> list[str]:
    """The installed backends ``auto`` measures at ``precision``; for a folder that ships only a graph, only the
    runtimes that can run it."""
    from sentemb.backends import choice as measured

    runnable = measured.CANDIDATES.get(precision, ())
    if not spec.weights:
        from sentemb.models.prebuilt import graph_runtimes

        runtimes = graph_runtimes(spec.transformer_dir, config.file_name)
        runnable = tuple(name for name in runnable if measured.candidate_parts(name)[0] in runtimes)
    return [name for name in runnable if measured.installed(name, precision, machine.has)]


def create_backend(spec: ModelSpec, config: EncoderConfig, machine: Machine, head: Head) -> Backend:
    """Build the backend that ``config`` names (``auto`` is resolved first by :func:`sentemb.plan.resolve`)."""
    if spec.static is not None:
        from sentemb.backends.static_backend import StaticBackend, check_static_config

        check_static_config(config)
        return StaticBackend(spec, head)
    config, why = resolve(config, machine, spec)
    if why != "as configured":
        log.info("sentemb: running %s (%s): %s", config.backend.value, config.precision.value, why)
    if config.backend == "openvino":
        from sentemb.backends.openvino_backend import create_openvino_backend

        return create_openvino_backend(spec, config, head)
    if config.backend == "onnx":
        try:
            from sentemb.backends.onnx_backend import create_onnx_backend
        except ImportError as exc:  # onnxruntime missing
            raise ConfigError(f"the ONNX backend needs onnxruntime: pip install 'sentemb[onnx]' ({exc})") from None
        return create_onnx_backend(spec, config, machine, head)
    if not machine.torch:
        raise ConfigError("backend='torch' needs torch and transformers: pip install 'sentemb[torch]'")
    from sentemb.backends.torch_backend import TorchBackend

    return TorchBackend(spec, config, head)
