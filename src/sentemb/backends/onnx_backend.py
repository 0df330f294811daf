"""ONNX Runtime backend: the cached export of the model (fp32, or int8 weights) in one InferenceSession.

On the CPU it runs several batches at once, by default one per core with one thread each (as the
OpenVINO backend's streams do): a batch of short texts is too small to keep two cores busy inside one
run, so the encoder keeps ``streams`` batches in flight instead. A batch that starts while no other is
running (one request on an idle server, a small ``encode`` call, the tail of a large one) runs on a
second session of the same graph with a thread per core, so that it does not leave the other cores idle;
the stream count thus follows the load. Neither session's threads spin when out of work, so they never
hold a core that another batch, the tokenizer or a server's event loop needs. Once the export is cached, building
this backend imports neither torch nor transformers: the session reads ``model.onnx`` and the
tokenizer comes from the ``tokenizer.json`` saved beside it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from sentemb.backends import cuda_fallback
from sentemb.batching import MAX_PADDING
from sentemb.config import Precision
from sentemb.errors import BackendError, ConfigError
from sentemb.extras import require
from sentemb.heads import head_width
from sentemb.plan import ORT_THREADS_ENV, env_count, ort_cpu_streams

if TYPE_CHECKING:
    from sentemb.batching import TokenBatch
    from sentemb.config import EncoderConfig
    from sentemb.export import Exported
    from sentemb.export.prebuilt import Prebuilt
    from sentemb.heads import Head
    from sentemb.machine import Machine
    from sentemb.models import ModelSpec
    from sentemb.tokenize import LoadedTokenizer

def _ort_errors() -> tuple[type[Exception], ...]:
    """ONNX Runtime's own exception classes (they derive from Exception only)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "RuntimeException", "InvalidArgument")
    return tuple(getattr(state, name) for name in names if hasattr(state, name))


class OnnxBackend:
    """Runs an exported graph whose output is the head's (``last_hidden_state`` or ``logits``)."""

    name = "onnx"
    max_padding = MAX_PADDING  # its graphs are padded
    tokenizer: LoadedTokenizer | None

    def __init__(
        self,
        exported: Exported | Prebuilt,
        device: str,
        tokenizer: LoadedTokenizer,
        spec: ModelSpec,
        head: Head,
        *,
        cores: int = 1,
    ) -> None:
        ort = require("onnxruntime", "onnx", "the ONNX backend")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        providers: list = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            index = device.split(":")[1] if ":" in device else "0"
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
            self.streams, threads = 1, env_count(ORT_THREADS_ENV) or 0  # 0: ONNX Runtime's choice
        else:  # InferenceSession.run is thread-safe: each of ``streams`` runs at once gets its own threads
            self.streams, threads = ort_cpu_streams(cores)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = threads
        self.threads = threads or None
        self.session = _session(ort, str(exported.model), options, providers)
        # the session a batch gets when it runs alone: every core (None where the first one has them)
        self._solo = None
        if not device.startswith("cuda") and self.streams > 1 and threads < cores:
            options.intra_op_num_threads = cores
            self._solo = _session(ort, str(exported.model), options, providers)
        self._running = 0
        self._lock = threading.Lock()
        self.device = device
        self.graph: str | None = str(exported.model)
        self.tokenizer = tokenizer
        self._inputs = [item.name for item in self.session.get_inputs()]
        outputs = {item.name: item for item in self.session.get_outputs()}
        if head.output not in outputs:
            raise BackendError(f"{exported.model} has no output {head.output!r} (it has {sorted(outputs)}); "
                               "export the model again with `sentemb export MODEL OUT --force`")  # fmt: skip
        self.head = head
        self.dim = head_width(spec, head, int(outputs[head.output].shape[-1]))

    def run(self, batch: TokenBatch) -> np.ndarray:
        with self._lock:
            alone = self._running == 0
            self._running += 1
        session = self._solo if alone and self._solo is not None else self.session
        try:
            (out,) = session.run([self.head.output], batch.feed(self._inputs))
        finally:
            with self._lock:
                self._running -= 1
        return self.head.finish(out, batch)


def _session(ort: Any, model: str, options: Any, providers: list) -> Any:
    errors: tuple[type[Exception], ...] = (*_ort_errors(), RuntimeError, OSError)
    try:
        return ort.InferenceSession(model, options, providers=providers)
    except errors as exc:
        raise BackendError(f"onnxruntime could not load {model}: {exc}") from None


def create_onnx_backend(spec: ModelSpec, config: EncoderConfig, machine: Machine, head: Head) -> OnnxBackend:
    """Export (once, cached) and load ``spec`` at ``config.precision`` (fp32 or int8)."""
    ort = require("onnxruntime", "onnx", "the ONNX backend")
    from sentemb.export import ensure_export
    from sentemb.export.prebuilt import find_prebuilt

    precision = config.precision
    if precision not in (Precision.FP32, Precision.INT8):
        raise ConfigError(
            f"the ONNX backend runs fp32 and int8, not {precision.value}; use backend='torch' for bf16/fp16"
        )
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    device = cuda_fallback(config.device, has_cuda)
    if precision is Precision.INT8 and device.startswith("cuda"):
        raise ConfigError("int8 runs on the CPU (ONNX Runtime's int8 kernels); pass device='cpu'")
    exported = find_prebuilt(spec, "onnx", config.file_name) or ensure_export(
        spec, precision, export_dir=config.export_dir, trust_remote_code=config.trust_remote_code
    )
    return OnnxBackend(exported, device, exported.load_tokenizer(), spec, head, cores=machine.cores)
