"""Where OpenVINO spends its time on sentemb's cached IR: per-layer counters grouped by layer type.

One stream, one thread, one batch of random token ids repeated (no padding), so the shares are those
of the linear layers, attention and the element-wise layers between them. The export is built once if
it is not cached yet.

    .venv/bin/python benchmarks/ov_profile.py [--precision int8] [--hint bf16] [--batch 32] [--tokens 20]
    .venv/bin/python benchmarks/ov_profile.py --ir other/model.xml      # any IR with sentemb's inputs
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import numpy as np
from machine import cpu_line


def default_ir(precision: str) -> Path:
    """sentemb's cached OpenVINO IR of the default model (fp32 for bf16, which is a compile-time hint)."""
    from sentemb.config import EncoderConfig, Precision
    from sentemb.export import ensure_export
    from sentemb.machine import Machine
    from sentemb.plan import open_model

    _, spec = open_model(EncoderConfig(), Machine.here())  # the model's folder, no backend loaded
    ir = Precision.INT8 if precision == "int8" else Precision.FP32
    return Path(ensure_export(spec, ir, runtime="openvino").model)


def profile(ir: Path, hint: str, batch: int, tokens: int, repeats: int) -> tuple[float, collections.Counter]:
    """(wall ms per batch, ms per (layer type, kernel)) averaged over ``repeats`` inferences."""
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint, "PERF_COUNT": True}
    compiled = ov.Core().compile_model(str(ir), "CPU", {**config, "INFERENCE_NUM_THREADS": 1})
    ids = np.random.default_rng(0).integers(1000, 20000, (batch, tokens))
    feed = {}
    for port in compiled.inputs:
        name = port.get_any_name()
        feed[name] = np.ones_like(ids) if "mask" in name else ids if "input_ids" in name else np.zeros_like(ids)
    request = compiled.create_infer_request()
    for _ in range(3):
        request.infer(feed)
    spent: collections.Counter = collections.Counter()
    start = time.perf_counter()
    for _ in range(repeats):
        request.infer(feed)
        for layer in request.profiling_info:
            spent[(layer.node_type, layer.exec_type)] += layer.real_time.total_seconds() * 1e3 / repeats
    return (time.perf_counter() - start) * 1e3 / repeats, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="int8")
    parser.add_argument("--hint", default=None, help="OpenVINO inference precision hint [f32 for fp32, else bf16]")
    parser.add_argument("--ir", type=Path, default=None, help="an IR (model.xml) instead of sentemb's cached one")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    ir = args.ir or default_ir(args.precision)
    hint = args.hint or ("f32" if args.precision == "fp32" else "bf16")
    wall, spent = profile(ir, hint, args.batch, args.tokens, args.repeats)
    total = sum(spent.values())
    print(f"{ir} ({hint} hint): {wall:.1f} ms per {args.batch} x {args.tokens}-token batch, {total:.1f} ms in layers")
    for (kind, kernel), ms in spent.most_common(12):
        print(f"{ms:8.2f} ms {100 * ms / total:5.1f}%  {kind:30s} {kernel}")


if __name__ == "__main__":
    main()
