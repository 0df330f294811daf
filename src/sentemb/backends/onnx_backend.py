"""ONNX Runtime backend: the cached export of the model (fp32, or int8 weights) in one InferenceSession.

On the CPU it runs several batches at once, by default one per core with one thread each (as the
OpenVINO backend's streams do): a batch of short texts is too small to keep two cores busy inside one
run, so the encoder keeps ``streams`` batches in flight instead. Once the export is cached, building
this backend imports neither torch nor transformers: the session reads ``model.onnx`` and the
tokenizer comes from the ``tokenizer.json`` saved beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sentemb.backends import cuda_fallback
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
        options.intra_op_num_threads = threads
        self.threads = threads or None
        errors: tuple[type[Exception], ...] = (*_ort_errors(), RuntimeError, OSError)
        try:
            self.session = ort.InferenceSession(str(exported.model), options, providers=providers)
        except errors as exc:
            raise BackendError(f"onnxruntime could not load {exported.model}: {exc}") from None
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
        (out,) = self.session.run([self.head.output], batch.feed(self._inputs))
        return self.head.finish(out, batch)


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
