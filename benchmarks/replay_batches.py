"""How fast OpenVINO runs the batches sentemb makes from calls of a given size, on one thread.

The server encodes each stream's micro-batch (about 75 sentences at saturation on 2 cores) as one call;
a large call sorts thousands of texts by length first. This encodes the same STS sentences in calls of
each --slices size with the default model's OpenVINO fp32 backend, keeps the batches its planner makes
(at each --max-padding limit), then replays them on one thread (LATENCY hint, interleaved passes, the
best counts), so that what differs is only how the texts were batched: the number of inferences and the
padding they carry.

    PYTHONPATH=src .venv/bin/python benchmarks/replay_batches.py                      # slices 75..3000
    PYTHONPATH=src .venv/bin/python benchmarks/replay_batches.py --slices 75 --max-padding 0.15,0.3,0.5,1
"""

from __future__ import annotations

import argparse
import random
import time

from machine import cpu_line
from serve_load import sts_sentences


def captured(encoder: object, texts: list[str], size: int, max_padding: float | None) -> list[dict]:
    """The feeds of every batch the encoder runs when it encodes ``texts`` in calls of ``size``."""
    backend = encoder._backend  # type: ignore[attr-defined]
    feeds: list[dict] = []
    run, limit = backend.run, backend.max_padding

    def keep(batch: object) -> object:
        feeds.append(batch.feed(backend._inputs))  # type: ignore[attr-defined]
        return run(batch)

    backend.run, backend.max_padding = keep, limit if max_padding is None else max_padding
    try:
        for start in range(0, len(texts), size):
            encoder.encode(texts[start : start + size])  # type: ignore[attr-defined]
    finally:
        backend.run, backend.max_padding = run, limit
    return feeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=3000)
    parser.add_argument("--slices", default="75,150,300,3000", help="call sizes, comma-separated")
    parser.add_argument("--max-padding", default=None, help="padding limits, comma-separated [the backend's]")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    print(cpu_line())
    import openvino as ov

    import sentemb

    texts = random.Random(1).sample(sts_sentences(), args.texts)
    encoder = sentemb.load(backend="openvino", precision="fp32")
    limits = [float(x) for x in args.max_padding.split(",")] if args.max_padding else [None]
    runs = {(int(size), limit): captured(encoder, texts, int(size), limit)
            for size in args.slices.split(",") for limit in limits}  # fmt: skip
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1"}
    request = ov.Core().compile_model(encoder.plan.graph, "CPU", config).create_infer_request()
    for feeds in runs.values():  # every shape once, untimed
        for feed in feeds:
            request.infer(feed)
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.passes):
        for key, feeds in runs.items():
            started = time.perf_counter()
            for feed in feeds:
                request.infer(feed)
            best[key] = min(best[key], time.perf_counter() - started)
    for (size, limit), feeds in runs.items():
        real = sum(int(f["attention_mask"].sum()) for f in feeds)
        padding = sum(f["attention_mask"].size for f in feeds) / real - 1
        shown = "the backend's" if limit is None else f"{limit:g}"
        print(f"calls of {size:5d}, max padding {shown}: {len(feeds):4d} batches, {padding:5.1%} padding, "
              f"{len(texts) / best[(size, limit)]:5.0f} sentences/s on one thread")  # fmt: skip


if __name__ == "__main__":
    main()
