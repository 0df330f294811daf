"""A static model distilled from the default model against the model itself, in one process.

    .venv/bin/python benchmarks/static_bench.py                 # 3,000 unique STS train sentences
    .venv/bin/python benchmarks/static_bench.py --limit 1000 --rounds 3 --dim 256

Distils all-MiniLM-L6-v2 to ``--dim`` numbers (``sentemb.distill``, its forward passes on sentemb's
fastest exact backend, ``auto`` fp32) and times it; then sentences/s of the static model (sentemb),
the same folder in model2vec, sentence-transformers (torch fp32, batch 32) and sentemb's fastest
exact backend on the model itself. Rounds are interleaved and the median counts; a round of a fast
method repeats its encode until it has run half a second. Then STS dev Spearman (x100) and memory
(RSS the method added when it loaded, the process's peak during its rounds).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import PeakRss, rss_mb, unique_sentences
from machine import cpu_line

ROOT = Path(__file__).resolve().parents[1]
# The STS data moves into the repository (data/stsb); until then it lies beside it.
DATA = next((p for p in (ROOT / "data" / "stsb", ROOT.parent / "shared" / "data" / "stsb") if p.is_dir()),
            ROOT / "data" / "stsb")  # fmt: skip
MIN_ROUND_SECONDS = 0.5


@dataclass
class Method:
    label: str
    encode: Callable[[list[str]], object]
    load_mb: float
    rates: list[float] = field(default_factory=list)
    peak_mb: float = 0.0


def loaded(label: str, make: Callable[[], Callable[[list[str]], object]]) -> Method:
    before = rss_mb()
    encode = make()
    return Method(label, encode, rss_mb() - before)


def timed_round(method: Method, texts: list[str]) -> None:
    runs, started = 0, time.perf_counter()
    with PeakRss() as peak:
        while True:
            method.encode(texts)
            runs += 1
            elapsed = time.perf_counter() - started
            if elapsed >= MIN_ROUND_SECONDS:
                break
    method.rates.append(runs * len(texts) / elapsed)
    method.peak_mb = max(method.peak_mb, peak.peak / 2**20)


def sts(encode: Callable[[list[str]], object], dev: Path) -> float:
    import numpy as np

    import sentemb
    from sentemb.evaluation import correlations

    data = sentemb.read_sts(dev)
    a = np.asarray(encode(data.sentences1), dtype=np.float32)
    b = np.asarray(encode(data.sentences2), dtype=np.float32)
    cosine = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return correlations(cosine, np.asarray(data.scores))[0]


def methods(folder: Path) -> list[Method]:
    import sentemb

    def static() -> Callable[[list[str]], object]:
        encoder = sentemb.load(folder)
        return encoder.encode

    def model2vec() -> Callable[[list[str]], object]:
        from model2vec import StaticModel

        model = StaticModel.from_pretrained(folder)
        return lambda texts: model.encode(texts, use_multiprocessing=False)

    def st() -> Callable[[list[str]], object]:
        from sentence_transformers import SentenceTransformer

        from sentemb.models.resolve import bundled_default

        model = SentenceTransformer(str(bundled_default()), device="cpu")
        return lambda texts: model.encode(texts, batch_size=32, convert_to_numpy=True)

    def fastest() -> Callable[[list[str]], object]:
        encoder = sentemb.load(backend="auto", precision="fp32", device="cpu")
        print(f"sentemb auto fp32 runs {encoder.backend} {encoder.describe().precision}")
        return encoder.encode

    return [loaded("sentemb static (distilled)", static), loaded("model2vec, same folder", model2vec),
            loaded("sentence-transformers fp32", st), loaded("sentemb auto fp32 (model)", fastest)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=3000, help="first N unique STS train sentences [3000]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--data", type=Path, default=DATA, help="folder with sts-train.csv and sts-dev.csv")
    parser.add_argument("--out", type=Path, default=None, help="keep the distilled model here [a temp folder]")
    args = parser.parse_args()
    print(cpu_line())
    import sentemb

    out = args.out or Path(tempfile.mkdtemp(prefix="static-bench-")) / "minilm-static"
    started = time.perf_counter()
    sentemb.distill("default", out, dim=args.dim, backend="auto", precision="fp32", device="cpu")
    print(f"distilled all-MiniLM-L6-v2 to {args.dim} dims in {time.perf_counter() - started:.1f} s -> {out}")
    texts = unique_sentences(args.data / "sts-train.csv", args.limit)
    rows = methods(out)
    for method in rows:
        method.encode(texts[:64])  # warm-up
    for _ in range(args.rounds):
        for method in rows:
            timed_round(method, texts)
    base = statistics.median(next(m for m in rows if m.label.startswith("sentence-")).rates)
    fast = statistics.median(next(m for m in rows if m.label.startswith("sentemb auto")).rates)
    print(f"\n{len(texts):,} STS sentences, {args.rounds} interleaved rounds (median)")
    header = ("sentences/s", "vs ST", "vs auto", "STS dev", "load MB", "peak MB")
    print(f"{'method':<28} {header[0]:>12}" + "".join(f" {name:>8}" for name in header[1:]))
    for method in rows:
        rate = statistics.median(method.rates)
        spearman = sts(method.encode, args.data / "sts-dev.csv")
        print(f"{method.label:<28} {rate:>12,.0f} {rate / base:>7.1f}x {rate / fast:>7.1f}x {spearman:>8.2f} "
              f"{method.load_mb:>8.0f} {method.peak_mb:>8.0f}")  # fmt: skip
    print("rounds:", {m.label: [round(r) for r in m.rates] for m in rows})


if __name__ == "__main__":
    main()
