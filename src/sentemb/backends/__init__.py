"""The backend seam: a padded token batch in, pooled vectors (B, H) float32 out.

Each backend pools where its token embeddings lie (numpy on the CPU, torch on a GPU, so that only
(B, H) crosses back to the host) with the pure functions of :mod:`sentemb.pooling`; everything else
(tokenising, batching, normalising) lives in the encoder, so each backend stays one small class.
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

from sentemb.errors import ConfigError, installed, openvino_runs, torch_installed

if TYPE_CHECKING:
    from sentemb.backends.choice import Choice
    from sentemb.batching import TokenBatch
    from sentemb.config import EncoderConfig, Pooling, Precision
    from sentemb.models import ModelSpec
    from sentemb.tokenize import LoadedTokenizer

log = logging.getLogger("sentemb")


class Backend(Protocol):
    """What the encoder needs from a backend."""

    name: str  # "torch", "onnx", "openvino" or "static"
    device: str  # "cpu", "cuda", "cuda:1"
    dim: int
    # How many embed() calls pay off at once (OpenVINO's streams); the encoder keeps that many in flight.
    parallel: int
    # The backend's own tokenizer (e.g. cached beside an ONNX export), or None for the model folder's.
    tokenizer: LoadedTokenizer | None

    def embed(self, batch: TokenBatch, pooling: Pooling) -> np.ndarray:
        """Pooled vectors (B, dim) as float32 for one padded batch (padding never counts)."""
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


def _gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU, without importing torch (1 s) to ask."""
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/dxg")


def _cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX on x86, the BF16 extension on ARM,
    oneDNN not capped below them); elsewhere bf16 is emulated and slow."""
    from sentemb.backends.choice import cpu_facts, native_bf16

    return native_bf16(cpu_facts())


_installed = installed


def _openvino_runs(precision: Precision) -> bool:
    from sentemb.config import Precision

    return openvino_runs(precision is Precision.INT8, _installed)


def auto_choice(config: EncoderConfig) -> EncoderConfig:
    """The fastest backend that meets the requested fidelity on this machine (see benchmarks/bench.py).

    On a GPU (asked for, or device='auto' with one present) -> torch, except int8, which runs on
    the CPU. On the CPU the order is openvino, then onnx, then torch, by what is installed:
    fp32 -> exact on all three; int8 -> openvino (static) or onnx (dynamic); bf16 -> openvino or
    torch where the CPU has native bf16 (measured against exact fp32 on OpenVINO, which wins where the
    bf16 units are no faster), else exact fp32 (more faithful and faster than emulated bf16).
    """
    from sentemb.config import Precision

    precision = config.precision
    gpu = config.device.startswith("cuda") or (config.device == "auto" and _gpu_present())
    if not torch_installed():  # the base install: its ONNX runtime, exact fp32 or int8
        kept = precision if precision is Precision.INT8 else Precision.FP32
        runtime = "openvino" if _openvino_runs(kept) else "onnx"
        device = "cpu" if config.device == "auto" else config.device
        return config.replace(backend=runtime, precision=kept, device=device)
    if precision is not Precision.INT8 and (gpu or precision is Precision.FP16):
        return config.replace(backend="torch")
    cpu = "cpu" if config.device == "auto" else config.device
    if precision is Precision.BF16 and not _cpu_has_bf16():
        precision = Precision.FP32
    if _openvino_runs(precision):
        return config.replace(backend="openvino", precision=precision, device=cpu)
    if precision is Precision.BF16:
        return config.replace(backend="torch")
    if _installed("onnxruntime"):
        device = cpu if precision is Precision.INT8 else config.device
        return config.replace(backend="onnx", precision=precision, device=device)
    return config.replace(backend="torch", precision=precision)


def resolve_choice(config: EncoderConfig) -> EncoderConfig:
    """``config`` with ``backend='auto'`` replaced by what will run (:func:`auto_choice`), so that
    the encoder's config, ``describe()`` and manifests name the real backend and precision.
    The default backend (torch) on an install without torch resolves like 'auto' (the base install's runtime)."""
    if config.backend == "torch" and not torch_installed():
        log.info("sentemb: torch is not installed; running on the base install's runtime instead")
    elif config.backend != "auto":
        return config
    chosen = auto_choice(config)
    log.info("sentemb: backend='auto' chose %s (%s)", chosen.backend, chosen.precision.value)
    return chosen


BACKEND_ENV = "SENTEMB_BACKEND"


def choose_backend(
    spec: ModelSpec,
    config: EncoderConfig,
    run: Callable[[EncoderConfig, Backend], None],
    *,
    clock: Callable[[], float] | None = None,
    find: Callable[[str], bool] = _installed,
) -> tuple[EncoderConfig, Backend, Choice | None]:
    """The config and backend that will run, and on the CPU with ``backend='auto'`` the measured choice.

    ``$SENTEMB_BACKEND`` (or an explicit ``backend=``) overrides the measurement. On the CPU each
    installed candidate for the precision is timed by ``run`` (one pass over the built-in sample)
    on the first load of this (model, precision) on this machine; the winner is cached
    (:mod:`sentemb.backends.choice`). GPU, fp16 and emulated bf16 keep :func:`auto_choice`'s rule.
    """
    from sentemb.backends import choice as measured
    from sentemb.export.cache import export_root
    from sentemb.export.recipe import version
    from sentemb.models.resolve import sha256_file

    if spec.static is not None:  # a table lookup: nothing to choose
        return config, create_backend(spec, config), None
    override = os.environ.get(BACKEND_ENV, "").strip()
    if config.backend == "auto" and override and override != "auto":
        config = config.replace(backend=override)  # validated by EncoderConfig
    ruled = resolve_choice(config)
    gpu = config.device.startswith("cuda") or (config.device == "auto" and _gpu_present())
    if config.backend != "auto" or (gpu and ruled.backend == "torch"):
        return ruled, create_backend(spec, ruled), None
    precision = measured.precision_name(ruled.precision)
    candidates = [n for n in measured.CANDIDATES.get(precision, ()) if measured.installed(n, precision, find)]
    if len(candidates) < 2:
        return ruled, create_backend(spec, ruled), None
    cpu = measured.cpu_facts()
    from sentemb.models.prebuilt import graph_files

    # a folder that ships only its graph (no weights) is told apart by the graph's bytes
    weights = [sha256_file(p) for p in spec.weights or graph_files(spec.transformer_dir)]
    key = measured.choice_key(weights, precision, measured.runtime_versions(version), cpu)
    path = measured.choice_path(export_root(config.export_dir), key)
    cached = measured.read_cached(path, key, candidates)
    if cached is not None:
        chosen = measured.candidate_config(ruled, cached.backend)
        return chosen, create_backend(spec, chosen), cached

    def build(label: str) -> Backend:
        return create_backend(spec, measured.candidate_config(ruled, label))

    def timed(label: str, backend: Backend) -> None:
        run(measured.candidate_config(ruled, label), backend)

    found, backend = measured.measure(candidates, build, timed, precision=precision, key=key,
                                      clock=clock or measured.time.perf_counter)  # fmt: skip
    found = measured.Choice(found.backend, found.precision, found.rates, True, key, str(path), found.errors)
    measured.write_cached(path, found)
    log.info("sentemb: backend='auto' measured %s and chose %s", found.rates, found.backend)
    return measured.candidate_config(ruled, found.backend), backend, found


def create_backend(spec: ModelSpec, config: EncoderConfig) -> Backend:
    """Build the backend that ``config`` names (``auto`` is resolved first: see :func:`resolve_choice`);
    a static embedding model always gets the static backend (a table lookup in numpy)."""
    if spec.static is not None:
        from sentemb.backends.static_backend import StaticBackend, check_static_config

        check_static_config(config)
        return StaticBackend(spec)
    config = resolve_choice(config)
    if config.backend == "openvino":
        from sentemb.backends.openvino_backend import create_openvino_backend

        return create_openvino_backend(spec, config)
    if config.backend == "onnx":
        try:
            from sentemb.backends.onnx_backend import create_onnx_backend
        except ImportError as exc:  # onnxruntime missing
            raise ConfigError(f"the ONNX backend needs onnxruntime: pip install 'sentemb[onnx]' ({exc})") from None
        return create_onnx_backend(spec, config)
    if not torch_installed():
        raise ConfigError("backend='torch' needs torch and transformers: pip install 'sentemb[torch]'")
    from sentemb.backends.torch_backend import TorchBackend

    return TorchBackend(spec, config)
