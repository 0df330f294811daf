"""ONNX Runtime: a batch per core, one thread each (the default) against one batch on all cores.

Both settings are loaded in one process (the environment is read when a backend is built) and timed
in interleaved rounds of ``encode`` on held-out STS sentences; then the latency of calls that are one
small batch, where running on one core costs.

    .venv/bin/python benchmarks/ort_streams.py [--limit 3000] [--rounds 5] [--precision int8 --precision fp32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from bench import STSB, held_out_sentences
from machine import cpu_line

SETTINGS = {"a batch per core": ("", "1"), "one batch on all cores": ("1", "")}  # (streams, threads) env


def load(precision: str, streams: str, threads: str) -> Any:
    import sentemb
    from sentemb.plan import ORT_STREAMS_ENV as STREAMS_ENV
    from sentemb.plan import ORT_THREADS_ENV as THREADS_ENV

    os.environ[STREAMS_ENV], os.environ[THREADS_ENV] = streams, threads
    try:
        return sentemb.load(backend="onnx", precision=precision)
    finally:
        del os.environ[STREAMS_ENV], os.environ[THREADS_ENV]


def latency(encoders: dict[str, Any], texts: list[str]) -> None:
    """Median wait of 30 calls of 1, 16 and 64 texts under each setting."""
    for size in (1, 16, 64):
        waits: dict[str, list[float]] = {name: [] for name in encoders}
        for call in range(30):
            chunk = texts[call * size % (len(texts) - size) :][:size]
            for name, encoder in encoders.items():
                start = time.perf_counter()
                encoder.encode(chunk)
                waits[name].append((time.perf_counter() - start) * 1e3)
        shown = "; ".join(f"{name} {statistics.median(w):.1f} ms" for name, w in waits.items())
        print(f"  {size} texts a call: {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precision", action="append", help="int8, fp32 [both]")
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    texts = held_out_sentences(STSB / "sts-train.csv", args.limit)
    for precision in args.precision or ("int8", "fp32"):
        encoders = {name: load(precision, *env) for name, env in SETTINGS.items()}
        rates: dict[str, list[float]] = {name: [] for name in encoders}
        for encoder in encoders.values():
            encoder.encode(texts[:300])
        for _ in range(args.rounds):
            for name, encoder in encoders.items():
                start = time.perf_counter()
                encoder.encode(texts)
                rates[name].append(len(texts) / (time.perf_counter() - start))
        a, b = rates.values()
        ratio = statistics.median(x / y for x, y in zip(a, b, strict=True))
        print(f"{precision}: " + "; ".join(f"{n} {statistics.median(r):.0f}/s" for n, r in rates.items())
              + f"; ratio {ratio:.2f}x (median of rounds)")  # fmt: skip
        latency(encoders, texts)

if __name__ == "__main__":
    main()
