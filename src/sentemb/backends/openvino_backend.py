"""OpenVINO backend: the cached IR of the model on the CPU, fp32, bf16 (a compile-time hint) or int8.

It compiles for throughput: several streams, each with its own share of the cores, so that
``streams`` batches run at once (the encoder keeps that many in flight). Once the export is cached,
building this backend imports neither torch nor transformers.
"""

from __future__ import annotations

import os
import queue
from typing import TYPE_CHECKING

import numpy as np

from sentemb.batching import max_padding
from sentemb.config import Precision
from sentemb.errors import BackendError, ConfigError
from sentemb.extras import require
from sentemb.heads import head_width

if TYPE_CHECKING:
    from sentemb.batching import TokenBatch
    from sentemb.config import EncoderConfig
    from sentemb.export import Exported
    from sentemb.export.prebuilt import Prebuilt
    from sentemb.heads import Head
    from sentemb.models import ModelSpec
    from sentemb.tokenize import LoadedTokenizer

# Streams (batches computed at once); default: OpenVINO's throughput choice for this CPU.
STREAMS_ENV = "SENTEMB_OV_STREAMS"


class OpenVinoBackend:
    """Runs an IR whose first output is the head's (``last_hidden_state`` or ``logits``); run() is thread-safe."""

    name = "openvino"
    device = "cpu"
    threads: int | None = None  # each stream's share of the cores is OpenVINO's choice
    tokenizer: LoadedTokenizer | None

    def __init__(
        self,
        exported: Exported | Prebuilt,
        precision: Precision,
        tokenizer: LoadedTokenizer,
        spec: ModelSpec,
        head: Head,
    ) -> None:
        ov = require("openvino", "openvino", "the OpenVINO backend")
        core = ov.Core()
        # OPTIMIZATION_CAPABILITIES reads CPUID; a oneDNN ISA cap (ONEDNN_MAX_CPU_ISA=AVX2, used to run as an
        # AVX2 machine would) removes the bf16 kernels, so bf16 must not be asked for under it.
        cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
        uncapped = cap == "ALL" or any(isa in cap for isa in ("BF16", "AMX", "FP16", "AVX10"))
        native_bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") and uncapped
        if precision is Precision.BF16 and not native_bf16:
            raise ConfigError("this CPU has no native bf16 (AVX512-BF16 or AMX); use precision='fp32' or 'int8'")
        # int8 keeps its int8 layers either way; bf16 for what lies between them is a little faster and
        # measured no less faithful (mean cosine 0.9932 both ways).
        hint = "f32" if precision is Precision.FP32 or not native_bf16 else "bf16"
        config = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": hint}
        streams = os.environ.get(STREAMS_ENV)
        if streams:
            config["NUM_STREAMS"] = streams
        try:
            self.compiled = core.compile_model(str(exported.model), "CPU", config)
        except RuntimeError as exc:
            raise BackendError(f"OpenVINO could not load {exported.model}: {exc}") from None
        self.streams = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(self.streams):
            self._requests.put(self.compiled.create_infer_request())
        self._inputs = {item.get_any_name() for item in self.compiled.inputs}
        self.graph: str | None = str(exported.model)
        self.max_padding = max_padding(exported.graph, int8=precision is Precision.INT8)
        self._warm_up()
        self.tokenizer = tokenizer
        self.head = head
        self.dim = head_width(spec, head, int(self.compiled.outputs[0].get_partial_shape()[-1].get_length()))

    def _warm_up(self) -> None:
        """One tiny inference on this thread before any concurrent use.

        The first ``infer`` of a process initialises C++ function-local statics in OpenVINO's Python
        binding (``Tensor.data``), one of which lets the GIL go while it runs: two threads making their
        first ``infer`` at once then deadlock (one holds the GIL and waits for the static, the other
        holds the static and waits for the GIL). Seen as a batch-job actor that never finished its first
        shard (its forward threads both in ``data_dispatcher.update_tensor``), and as two server requests
        hanging under ONEDNN_MAX_CPU_ISA=AVX2. Done here, it runs once.
        """
        ones = np.ones((1, 2), dtype=np.int64)
        feed = {name: ones if "mask" in name else np.zeros_like(ones) for name in self._inputs}
        request = self._requests.get()
        try:
            request.infer(feed)
        except RuntimeError as exc:
            raise BackendError(f"OpenVINO could not run {self.compiled}: {exc}") from None
        finally:
            self._requests.put(request)

    def run(self, batch: TokenBatch) -> np.ndarray:
        request = self._requests.get()
        try:  # finished before the request (and its output buffer) is handed to the next batch
            return self.head.finish(request.infer(batch.feed(self._inputs))[0], batch)
        finally:
            self._requests.put(request)


def create_openvino_backend(spec: ModelSpec, config: EncoderConfig, head: Head) -> OpenVinoBackend:
    """Export (once, cached) to OpenVINO IR and compile ``spec`` at ``config.precision`` on the CPU."""
    require("openvino", "openvino", "the OpenVINO backend")
    from sentemb.export import ensure_export
    from sentemb.export.prebuilt import find_prebuilt

    if config.device.startswith("cuda"):
        raise ConfigError("the OpenVINO backend runs on the CPU; for CUDA use backend='torch' or 'onnx'")
    if config.precision is Precision.FP16:
        raise ConfigError("fp16 is for CUDA; on the CPU use precision='bf16', 'fp32' or 'int8'")
    ir = Precision.INT8 if config.precision is Precision.INT8 else Precision.FP32  # bf16 compiles the fp32 IR
    exported = find_prebuilt(spec, "openvino", config.file_name) or ensure_export(
        spec, ir, runtime="openvino", export_dir=config.export_dir, trust_remote_code=config.trust_remote_code
    )
    return OpenVinoBackend(exported, config.precision, exported.load_tokenizer(), spec, head)
