"""sentence-transformers and every sentemb backend on the same sentences, in one process.

    .venv/bin/python benchmarks/bench.py                      # all 10,566 unique STS train sentences
    .venv/bin/python benchmarks/bench.py --limit 3000 --rounds 3 --plot bench.png

Each method is warmed up, then the rounds are interleaved (round 1 of every method, then round 2,
...) so that load from other processes on a shared machine hits all methods alike; the median round
counts. Prints sentences/s, the ratio to sentence-transformers (batch 32, its default), fidelity
against sentence-transformers' vectors, STS dev Spearman, the RSS a method added when it loaded and
the process's peak RSS during its rounds, then the startup times (import, cold CLI on ONNX).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
STSB = ROOT.parent / "shared" / "data" / "stsb"
# (label, backend, precision) of the sentemb rows.
SENTEMB_METHODS = [
    ("sentemb torch fp32", "torch", "fp32"),
    ("sentemb onnx fp32", "onnx", "fp32"),
    ("sentemb torch bf16", "torch", "bf16"),
    ("sentemb onnx int8", "onnx", "int8"),
    ("sentemb openvino fp32", "openvino", "fp32"),
    ("sentemb openvino bf16", "openvino", "bf16"),
    ("sentemb openvino int8", "openvino", "int8"),
]


@dataclass
class Method:
    label: str
    encode: Callable[[list[str], int], np.ndarray]
    load_mb: float
    times: list[float] = field(default_factory=list)
    peak_mb: float = 0.0
    vectors: np.ndarray | None = None


class PeakRss:
    """Samples this process's RSS every 5 ms while active."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def unique_sentences(path: Path, limit: int | None) -> list[str]:
    import sentemb

    data = sentemb.read_sts(path)
    texts = list(dict.fromkeys(data.sentences1 + data.sentences2))
    return texts[:limit] if limit else texts


def load_methods(names: set[str] | None, batch_size: int, st_batch_size: int) -> list[Method]:
    methods = []
    before = rss_mb()
    from sentence_transformers import SentenceTransformer

    from sentemb.models.resolve import bundled_default

    st = SentenceTransformer(str(bundled_default()), device="cpu")
    methods.append(
        Method(
            f"sentence-transformers fp32 (batch {st_batch_size})",
            lambda texts, bs: st.encode(texts, batch_size=bs or st_batch_size, convert_to_numpy=True),
            rss_mb() - before,
        )
    )
    import sentemb

    for label, backend, precision in SENTEMB_METHODS:
        if names and backend + " " + precision not in names and label not in names:
            continue
        before = rss_mb()
        enc = sentemb.load(device="cpu", backend=backend, precision=precision, batch_size=batch_size)

        def run(texts: list[str], bs: int, encoders: dict = {0: enc}) -> np.ndarray:  # noqa: B006
            if bs not in encoders:
                encoders[bs] = sentemb.load(config=encoders[0].config.replace(batch_size=bs))
            return encoders[bs].encode(texts)

        methods.append(Method(label, run, rss_mb() - before))
    return methods


def sts_spearman(method: Method, dev_path: Path) -> float:
    import sentemb
    from sentemb.evaluation import correlations

    dev = sentemb.read_sts(dev_path)
    unique = list(dict.fromkeys(dev.sentences1 + dev.sentences2))
    vectors = method.encode(unique, 0)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    row = {text: i for i, text in enumerate(unique)}
    a = vectors[[row[t] for t in dev.sentences1]]
    b = vectors[[row[t] for t in dev.sentences2]]
    return correlations(np.sum(a * b, axis=1), np.asarray(dev.scores))[0]


def fidelity(vectors: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    a = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cosine = np.sum(a * b, axis=1)
    return float(np.abs(vectors - reference).max()), float(cosine.mean()), float(cosine.min())


def startup_seconds(code: list[str], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(code, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def plot(methods: list[Method], texts: list[str], path: Path, sizes: list[int], rounds: int) -> None:
    """Throughput vs batch size; per size the methods' rounds are interleaved and the median kept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates: dict[str, list[float]] = {method.label: [] for method in methods}
    for size in sizes:
        times: dict[str, list[float]] = {method.label: [] for method in methods}
        for method in methods:
            method.encode(texts[:256], size)  # warm-up (and build the encoder for this size)
        for _ in range(rounds):
            for method in methods:
                start = time.perf_counter()
                method.encode(texts, size)
                times[method.label].append(time.perf_counter() - start)
        for label, measured in times.items():
            rates[label].append(len(texts) / statistics.median(measured))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, values in rates.items():
        ax.plot(sizes, values, marker="o", label=label)
        print(f"plot: {label}: " + ", ".join(f"{s}: {r:.0f}/s" for s, r in zip(sizes, values, strict=True)))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("sentences / s")
    ax.set_title(f"all-MiniLM-L6-v2, {len(texts)} STS train sentences, {os.cpu_count()} CPU cores")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N unique STS train sentences [all]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="sentemb batch size [64]")
    parser.add_argument("--st-batch-size", type=int, default=32, help="sentence-transformers batch size [32]")
    parser.add_argument("--only", action="append", help="sentemb methods, e.g. 'onnx int8' (repeatable)")
    parser.add_argument("--no-sts", action="store_true", help="skip STS dev Spearman")
    parser.add_argument("--no-startup", action="store_true", help="skip the startup timings")
    parser.add_argument("--plot", type=Path, default=None, help="write throughput vs batch size (png)")
    parser.add_argument("--plot-sizes", default="8,16,32,64,128,256")
    parser.add_argument("--plot-limit", type=int, default=1000, help="sentences per plot point [1000]")
    args = parser.parse_args()

    texts = unique_sentences(STSB / "sts-train.csv", args.limit)
    methods = load_methods(set(args.only) if args.only else None, args.batch_size, args.st_batch_size)
    for method in methods:  # warm-up (and the one-off ONNX export, if not cached)
        method.encode(texts[:512], 0)
    for _ in range(args.rounds):
        for method in methods:
            with PeakRss() as rss:
                start = time.perf_counter()
                method.vectors = method.encode(texts, 0)
                method.times.append(time.perf_counter() - start)
            method.peak_mb = max(method.peak_mb, rss.peak / 2**20)

    reference = methods[0]
    ref_rate = len(texts) / statistics.median(reference.times)
    print(
        f"\n{len(texts)} unique STS train sentences, {args.rounds} interleaved rounds (median), "
        f"{os.cpu_count()} CPU cores, sentemb batch {args.batch_size}\n"
    )
    print("| method | sentences/s | vs ST | max abs diff | mean cos | min cos | STS dev | load MB | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method in methods:
        rate = len(texts) / statistics.median(method.times)
        assert method.vectors is not None and reference.vectors is not None
        diff, mean_cos, min_cos = fidelity(method.vectors, reference.vectors)
        sts = "" if args.no_sts else f"{sts_spearman(method, STSB / 'sts-dev.csv'):.2f}"
        print(
            f"| {method.label} | {rate:.0f} | {rate / ref_rate:.2f}x | {diff:.1e} | {mean_cos:.5f} | "
            f"{min_cos:.4f} | {sts} | {method.load_mb:.0f} | {method.peak_mb:.0f} |",
            flush=True,
        )
    if not args.no_startup:
        python = [sys.executable]
        cli = str(Path(sys.executable).with_name("sentemb"))
        imp = startup_seconds([*python, "-c", "import sentemb"])
        cold = startup_seconds([cli, "encode", "--backend", "onnx", "--text", "hello world", "-o", "-", "-q"])
        st_imp = startup_seconds([*python, "-c", "import sentence_transformers"], repeats=1)
        print(
            f"\nstartup (median of 3, new processes): `import sentemb` {imp:.2f} s, "
            f"cold `sentemb encode --backend onnx --text ... -o -` {cold:.2f} s "
            f"(`import sentence_transformers` {st_imp:.2f} s)"
        )
    if args.plot:
        sizes = [int(s) for s in args.plot_sizes.split(",")]
        plot(methods, texts[: args.plot_limit], args.plot, sizes, args.rounds)


if __name__ == "__main__":
    main()
