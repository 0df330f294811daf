"""What runs where, decided once: the rules that turn a config and the machine's facts into a backend,
precision and device, and the frozen :class:`RuntimePlan` every part reads afterwards.

    EncoderConfig + Machine --resolve()--> backend, precision, device (by rule; 'auto' on the CPU is then
                                            measured by sentemb.backends.choose_backend)
    + the backend built     ---------------> RuntimePlan: streams, threads, batch size, graph, width, why

``load``, the server (concurrency, admission), ``sentemb info``, the CLI's fast path and the batch job
read the plan (or :func:`resolve` and :func:`describe_model` where no backend is built); none of them
re-derives it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sentemb.config import BackendName, EncoderConfig, Precision
from sentemb.errors import ConfigError, UnsupportedModelError
from sentemb.facts import EncoderFacts
from sentemb.machine import Machine
from sentemb.models import ModelSpec, Resolved, read_model_folder, resolve_model
from sentemb.models.prebuilt import graph_files, graph_runtimes, hub_graphs
from sentemb.models.resolve import sha256_file

# Texts per batch when the config leaves it open (bench.py on an H200: 64 and 256 ran at 0.45-0.9x of 1024).
BATCH_SIZE = {"cpu": 64, "cuda": 1024}
# ONNX Runtime on the CPU: batches run at once (default: one per core) and threads for each (default: the
# cores shared out among them).
ORT_STREAMS_ENV = "SENTEMB_ORT_STREAMS"
# Overrides backend='auto''s measurement (e.g. SENTEMB_BACKEND=onnx).
BACKEND_ENV = "SENTEMB_BACKEND"
# The runtimes that run a graph without torch (what the base install has, and what a shipped graph needs).
GRAPH_RUNTIMES = ("onnx", "openvino")
ORT_THREADS_ENV = "SENTEMB_ORT_THREADS"


@dataclass(frozen=True, kw_only=True)
class RuntimePlan:
    """How a loaded model runs, and why; shown by ``describe()``, ``sentemb info`` and ``GET /v1/models``."""

    kind: str  # what the model computes: "embedding"
    backend: str  # torch, onnx, openvino (never auto)
    precision: str
    device: str  # cpu, cuda, cuda:N
    batch_size: int  # most inputs per batch
    streams: int  # batches computed at once (the encoder keeps that many in flight)
    threads: int | None  # threads per batch where sentemb sets them; None: the runtime's own choice
    width: int  # numbers per output vector
    graph: str | None  # the ONNX / OpenVINO file that runs; None on torch
    why: tuple[str, ...]  # how the backend and precision were chosen, in order
    machine: str  # the facts the choice was made on

    def to_dict(self) -> dict[str, Any]:
        facts = dataclasses.asdict(self)
        facts["why"] = list(self.why)
        return facts


def on_gpu(config: EncoderConfig, machine: Machine) -> bool:
    """Whether ``config`` runs on a GPU here: asked for, or device='auto' on a machine with one."""
    return config.device.startswith("cuda") or (config.device == "auto" and machine.gpu)


def batch_size(config: EncoderConfig, device: str) -> int:
    """Most inputs per batch: the config's, else the default for the device."""
    return config.batch_size or BATCH_SIZE[device.split(":", maxsplit=1)[0]]


def resolve(config: EncoderConfig, machine: Machine, spec: ModelSpec | None = None) -> tuple[EncoderConfig, str]:
    """``config`` with the backend that will run by rule, and why.

    An explicit backend stays. The default (torch) on an install without torch, and ``auto``, take
    the fastest backend that meets the precision's fidelity here: on a GPU (asked for, or device='auto'
    with one present) torch, except int8, which runs on the CPU; on the CPU openvino, then onnx, then
    torch, by what is installed (int8: openvino static or onnx dynamic; bf16 only where the CPU has
    native bf16, else exact fp32, more faithful and faster than emulated bf16). On the CPU, ``auto``
    is then measured among the installed candidates (:func:`sentemb.backends.choose_backend`). A
    ``spec`` that ships a graph and no weights runs on a runtime that runs it (:func:`graph_choice`).
    """
    if spec is not None and not spec.weights:
        return graph_choice(config, spec, machine)
    if config.backend is BackendName.TORCH and not machine.torch:
        return runtime_choice(config, machine), "torch is not installed: the base install's runtime runs instead"
    if config.backend is not BackendName.AUTO:
        return config, "as configured"
    return _by_rule(config, machine)


def _by_rule(config: EncoderConfig, machine: Machine) -> tuple[EncoderConfig, str]:
    precision = config.precision
    cpu = "cpu" if config.device == "auto" else config.device
    if not machine.torch:  # the base install: its ONNX runtime, exact fp32 or int8
        return runtime_choice(config, machine), "no torch: the installed CPU runtime"
    if precision is not Precision.INT8 and (on_gpu(config, machine) or precision is Precision.FP16):
        return config.replace(backend="torch"), "a GPU (or fp16): torch"
    why = "the fastest CPU runtime installed"
    if precision is Precision.BF16 and not machine.native_bf16:
        precision, why = Precision.FP32, "no native bf16 on this CPU: exact fp32, faster and more faithful"
    if machine.openvino_runs(precision is Precision.INT8):
        return config.replace(backend="openvino", precision=precision, device=cpu), why
    if precision is Precision.BF16:
        return config.replace(backend="torch"), "bf16 without OpenVINO: torch"
    if machine.has("onnxruntime"):
        device = cpu if precision is Precision.INT8 else config.device
        return config.replace(backend="onnx", precision=precision, device=device), why
    return config.replace(backend="torch", precision=precision), "only torch is installed"


def runtime_choice(
    config: EncoderConfig, machine: Machine, runtimes: tuple[str, ...] = GRAPH_RUNTIMES
) -> EncoderConfig:
    """What runs where torch cannot (the base install, a folder that ships only a graph): OpenVINO where it
    runs, else ONNX Runtime, of ``runtimes`` (those that can run the graph); exact fp32 or int8; the CPU
    unless a device was named."""
    kept = config.precision if config.precision is Precision.INT8 else Precision.FP32
    if "openvino" in runtimes and machine.openvino_runs(kept is Precision.INT8):
        runtime = "openvino"
    elif "onnx" in runtimes:
        runtime = "onnx"
    elif machine.has("openvino"):  # a shipped IR is run as it is: nothing to quantise, so no NNCF needed
        runtime = "openvino"
    else:
        raise ConfigError("this model ships only an OpenVINO graph (no weights) and OpenVINO is not installed: "
                          "pip install 'sentemb[openvino]'")  # fmt: skip
    device = "cpu" if config.device == "auto" else config.device
    return config.replace(backend=runtime, precision=kept, device=device)


def graph_choice(config: EncoderConfig, spec: ModelSpec, machine: Machine) -> tuple[EncoderConfig, str]:
    """``config`` for a folder that ships a graph and no weights (an export, a hub repository's onnx/ or
    openvino/ files): torch (the default) and auto run it on a runtime that can, as on the base install;
    an explicit runtime that cannot run it is a ConfigError naming the one to pass."""
    runtimes = graph_runtimes(spec.transformer_dir, config.file_name)
    if not runtimes:
        shipped = ", ".join(str(path.relative_to(spec.transformer_dir)) for path in graph_files(spec.transformer_dir))
        raise ConfigError(f"{spec.root} has no weights and none of the graphs it ships ({shipped}) is the one "
                          "sentemb runs by default; pick one with file_name= (CLI: --file-name)")  # fmt: skip
    backend = str(config.backend.value)
    if backend in ("torch", "auto"):
        return runtime_choice(config, machine, runtimes), "the folder ships a graph and no weights: a runtime runs it"
    if backend not in runtimes:
        raise ConfigError(f"{spec.root} ships an OpenVINO graph and no weights, which backend={backend!r} cannot "
                          "run; pass backend='openvino' (CLI: --backend openvino)")  # fmt: skip
    return config, "as configured"


def ort_cpu_streams(cores: int, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(batches at once, threads for each) for ONNX Runtime on ``cores`` CPU cores: one thread per batch
    and a batch per core, unless SENTEMB_ORT_STREAMS / SENTEMB_ORT_THREADS say otherwise (the other
    then shares the cores out)."""
    env = os.environ if environ is None else environ
    streams, threads = env_count(ORT_STREAMS_ENV, env), env_count(ORT_THREADS_ENV, env)
    if streams is None:
        streams = max(1, cores // (threads or 1))
    return streams, threads or max(1, cores // streams)


def env_count(name: str, environ: Mapping[str, str] | None = None) -> int | None:
    """A whole number >= 1 from the environment variable ``name``, None when unset; ConfigError otherwise."""
    value = (os.environ if environ is None else environ).get(name)
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{name}={value!r}: give a whole number of at least 1, or unset it")
    return int(value)


def machine_line(machine: Machine) -> str:
    """One line: CPU model, architecture, usable cores, the flags that matter, caps and GPU."""
    flags = " ".join(sorted(machine.flags)) or "none of note"
    caps = "".join(f", {name}={value}" for name, value in machine.isa_caps)
    return f"{machine.cpu or 'unknown CPU'} ({machine.arch}, {machine.cores} cores; {flags}{caps})" + (
        ", GPU" if machine.gpu else ""
    )


def open_model(config: EncoderConfig, machine: Machine, task: str = "embedding") -> tuple[Resolved, ModelSpec]:
    """Resolve ``config.model`` (fetching from the hub only the graph that will run, where one will) and
    read its folder with the config's safety opt-ins; refuse a model of another task than ``task``
    ("embedding", "rerank" or "sparse") and a ``max_length`` the model cannot take. Loads no backend."""
    resolved = resolve_model(config.model, config.revision, config.cache_dir, graphs=wanted_graphs(config, machine))
    spec = read_model_folder(
        resolved.path, allow_pickle=config.allow_pickle, trust_remote_code=config.trust_remote_code
    )
    check_task(spec, task)
    if spec.task != task:  # a plain *ForSequenceClassification folder, run as what was asked for
        spec = dataclasses.replace(spec, task=task)
    if config.max_length is not None and config.max_length > spec.limit:
        raise ConfigError(
            f"max_length={config.max_length} is more than this model takes ({spec.limit} tokens); "
            "use long_text='chunk' to embed longer texts"
        )
    return resolved, spec


# How each task's model is loaded, for the message that sends a model to the right loader.
LOADERS = {
    "embedding": "an embedding model: load it with sentemb.load() (CLI: sentemb encode)",
    "rerank": "a cross-encoder (reranker) that scores text pairs: load it with sentemb.load_reranker() "
    "(CLI: sentemb rerank; server: --reranker)",
    "sparse": "a sparse (SPLADE) encoder that gives a weight per vocabulary id: load it with sentemb.load_sparse()",
}


def check_task(spec: ModelSpec, task: str) -> None:
    """Refuse a folder whose model computes something else than ``task`` (never run it as the wrong kind).

    A plain transformers ``*ForSequenceClassification`` folder is both: sentence-transformers embeds with
    its encoder (mean pooling) and scores pairs with its head."""
    classifier = any(name.endswith("ForSequenceClassification") for name in spec.architectures)
    if spec.task == task or (task == "rerank" and spec.task == "embedding" and classifier):
        return
    raise UnsupportedModelError(f"{spec.root} is {LOADERS[spec.task]}")


def wanted_graphs(config: EncoderConfig, machine: Machine) -> tuple[tuple[str, ...], ...]:
    """The hub graph files (:func:`~sentemb.models.prebuilt.hub_graphs`) the backend ``config`` resolves to
    would run: for ONNX / OpenVINO (asked for, or the base install's runtime) or a ``file_name``; else none.
    ``auto`` with torch installed may measure torch too, so it needs the weights, not a graph."""
    backend = str(config.backend.value)
    if backend != "auto" or not machine.torch:
        backend = str(resolve(config, machine)[0].backend.value)
    if backend in ("onnx", "openvino"):
        return hub_graphs(backend, config.file_name)
    return hub_graphs("onnx", config.file_name) if config.file_name else ()


def describe_model(config: EncoderConfig, resolved: Resolved, spec: ModelSpec, machine: Machine) -> EncoderFacts:
    """What the vectors of ``config`` on this model will be, from the folder alone (no backend is built):
    the backend, precision and device by rule (``auto`` on the CPU is measured only when one is built)."""
    chosen, _ = resolve(config, machine, spec)
    device = chosen.device if chosen.device != "auto" else ("cuda" if machine.gpu else "cpu")
    backend, precision = chosen.backend.value, chosen.precision.value
    if spec.static is not None:  # a table lookup runs on the CPU in float32 whatever was asked
        backend, device, precision = "static", "cpu", "fp32"
    truncate = config.truncate_dim or spec.st.truncate_dim
    width = spec.width
    default_prompt = spec.st.default_prompt_name if config.default_prompt_name is None else config.default_prompt_name
    return EncoderFacts(
        model=config.model,
        source=resolved.source,
        path=str(resolved.path),
        revision=resolved.revision,
        model_type=spec.model_type,
        dim=min(width, truncate) if truncate else width,
        pooling=(config.pooling or spec.pooling).value,
        normalize=spec.normalize if config.normalize is None else config.normalize,
        dense=tuple(layer.out_features for layer in spec.dense),
        matryoshka=truncate,
        similarity=spec.st.similarity_fn_name,
        prompt=default_prompt,
        prompts=spec.st.prompt_dict,
        max_length=config.max_length or spec.max_length,
        batch_size=batch_size(config, device),
        long_text=config.long_text.value,
        backend=backend,
        device=device,
        precision=precision,
        sha256={p.name: sha256_file(p) for p in spec.weights},
        max_chars=config.max_chars,
    )


def explain(
    asked: EncoderConfig, chosen: EncoderConfig, measured: dict[str, Any] | None, machine: Machine, spec: ModelSpec
) -> tuple[str, ...]:
    """Why ``chosen`` runs what it runs on ``spec``: a static model's table lookup, the measurement ``auto``
    made (its ``Choice.describe()``), the environment's override, or the rule."""
    if spec.static is not None:
        return ("a static embedding model: a table lookup in numpy, on the CPU",)
    if measured is not None:
        rates = ", ".join(f"{name} {rate:.0f}/s" for name, rate in measured["sentences_per_s"].items())
        return (f"backend=auto on the CPU: {measured['backend']} was the fastest ({rates}; {measured['source']})",)
    override = os.environ.get(BACKEND_ENV)
    if asked.backend is BackendName.AUTO and override and chosen.backend.value == override:
        return (f"{BACKEND_ENV}={override}",)
    return (f"backend={asked.backend.value}: {resolve(asked, machine, spec)[1]}",)
