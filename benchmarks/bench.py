"""sentence-transformers and every sentemb backend on the same sentences, in one process.

    .venv/bin/python benchmarks/bench.py                      # all 10,566 unique STS train sentences
    .venv/bin/python benchmarks/bench.py --limit 3000 --rounds 3 --plot bench.png
    .venv-peers/bin/python benchmarks/bench.py --held-out --limit 3000   # with the peers' rows
    python benchmarks/bench.py --device cuda                   # GPU: fp32, fp16, bf16

Each method is warmed up, then the rounds are interleaved (round 1 of every method, then round 2,
...) so that load from other processes on a shared machine hits all methods alike; the median round
counts. Prints sentences/s, the ratio to sentence-transformers (batch 32, its default; fp32 on the
CPU, fp16 on a GPU), fidelity against sentence-transformers' fp32 vectors, STS dev Spearman, the RSS
a method added when it loaded and the process's peak RSS during its rounds, then the startup times
(import, cold CLI on ONNX; CPU only).
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
from machine import cpu_line

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
STSB = ROOT / "data" / "stsb"
# (label, backend, precision) of the sentemb rows, per device.
GPU_METHODS = [
    ("sentemb torch fp32", "torch", "fp32"),
    ("sentemb torch fp16", "torch", "fp16"),
    ("sentemb torch bf16", "torch", "bf16"),
]
CPU_METHODS = [
    ("sentemb torch fp32", "torch", "fp32"),
    ("sentemb onnx fp32", "onnx", "fp32"),
    ("sentemb torch bf16", "torch", "bf16"),
    ("sentemb onnx int8", "onnx", "int8"),
    ("sentemb openvino fp32", "openvino", "fp32"),
    ("sentemb openvino bf16", "openvino", "bf16"),
    ("sentemb openvino int8", "openvino", "int8"),
    ("sentemb auto fp32", "auto", "fp32"),
    ("sentemb auto bf16", "auto", "bf16"),
    ("sentemb auto int8", "auto", "int8"),
]
SKIPPED: list[tuple[str, str]] = []  # (row, why it could not run here)


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


def held_out_sentences(path: Path, limit: int | None) -> list[str]:
    """Unique STS train sentences that no test reads (tests take sentence 1 of the first 3,000 pairs
    and both sentences of the first 600): sentence 1 of the later pairs, then sentence 2 of the rest."""
    import sentemb

    data = sentemb.read_sts(path)
    used = set(data.sentences1[:3000]) | set(data.sentences2[:600])
    texts = [t for t in dict.fromkeys(data.sentences1[3000:] + data.sentences2[600:]) if t not in used]
    return texts[:limit] if limit else texts


def st_methods(model: str, device: str, batch_size: int, st_batch_size: int) -> list[Method]:
    """sentence-transformers fp32 at its default batch (the fidelity reference); on a GPU also fp16,
    at its default batch (the speed reference there) and at sentemb's batch size."""
    from sentence_transformers import SentenceTransformer

    rows = [("fp32", st_batch_size)]
    if device != "cpu":
        rows += [("fp16", st_batch_size), ("fp16", batch_size)]
    methods = []
    for precision, size in rows:
        before = rss_mb()
        st = SentenceTransformer(model, device=device)
        if precision == "fp16":
            st.half()

        def run(texts: list[str], bs: int, st: SentenceTransformer = st, size: int = size) -> np.ndarray:
            return st.encode(texts, batch_size=bs or size, convert_to_numpy=True)

        methods.append(Method(f"sentence-transformers {precision} (batch {size})", run, rss_mb() - before))
    return methods


def load_methods(names: set[str] | None, model: str, device: str, batch_size: int, st_batch_size: int) -> list[Method]:
    methods = st_methods(model, device, batch_size, st_batch_size)
    import sentemb

    for label, backend, precision in CPU_METHODS if device == "cpu" else GPU_METHODS:
        if names and backend + " " + precision not in names and label not in names:
            continue
        before = rss_mb()
        try:
            enc = sentemb.load(model, device=device, backend=backend, precision=precision, batch_size=batch_size)
        except sentemb.SentembError as exc:  # e.g. bf16 on a CPU without native bf16: a row that says why
            SKIPPED.append((label, str(exc)))
            continue
        shown = f"{label} -> {enc.backend} {enc.config.precision.value}" if backend == "auto" else label

        def run(texts: list[str], bs: int, encoders: dict = {0: enc}) -> np.ndarray:  # noqa: B006
            if bs not in encoders:
                encoders[bs] = sentemb.load(config=encoders[0].config.replace(batch_size=bs))
            return encoders[bs].encode(texts)

        methods.append(Method(shown, run, rss_mb() - before))
    return methods


def sts_spearman(method: Method, dev_path: Path) -> float:
    import sentemb
    from sentemb.evaluation import correlations

    dev = sentemb.read_sts(dev_path)
    unique = list(dict.fromkeys(dev.sentences1 + dev.sentences2))
    vectors = method.encode(unique, 0).astype(np.float32)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    row = {text: i for i, text in enumerate(unique)}
    a = vectors[[row[t] for t in dev.sentences1]]
    b = vectors[[row[t] for t in dev.sentences2]]
    return correlations(np.sum(a * b, axis=1), np.asarray(dev.scores))[0]


def fidelity(vectors: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    vectors = vectors.astype(np.float32)  # sentence-transformers fp16 returns float16
    a = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cosine = np.sum(a * b, axis=1)
    return float(np.abs(vectors - reference).max()), float(cosine.mean()), float(cosine.min())


def round_ratios(method: Method, base: Method) -> str:
    """The spread: each round's speed against the reference's speed in the same round, lowest-highest."""
    ratios = [b / m for m, b in zip(method.times, base.times, strict=True)]
    return f"{min(ratios):.2f}-{max(ratios):.2f}x"


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
    ax.set_title(f"all-MiniLM-L6-v2, {len(texts)} STS train sentences, {hardware()}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


def peer_methods(model: str, calibration: list[str], st_batch_size: int, keep: Path | None) -> list[Method]:
    """The peers' fast paths (benchmarks/peers.py), static int8 calibrated on ``calibration``; rows that
    cannot run are recorded in SKIPPED."""
    from peers import Peers, load_peers

    from sentemb.machine import Machine

    peers = Peers(model, calibration, st_batch_size, Machine.here(), keep)
    methods = []
    for label, loaded in load_peers(peers):
        if isinstance(loaded, str):
            SKIPPED.append((label, loaded))
        else:
            methods.append(Method(label, loaded, 0.0))
    return methods


def hardware() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{os.cpu_count()} CPU cores"


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N unique STS train sentences [all]")
    parser.add_argument("--held-out", action="store_true", help="only sentences that no test reads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")
    parser.add_argument("--model", default=None, help="model folder [the bundled all-MiniLM-L6-v2]")
    parser.add_argument("--data", type=Path, default=STSB, help="folder with sts-train.csv and sts-dev.csv")
    parser.add_argument("--batch-size", type=int, default=None, help="sentemb batch size [64 CPU, 1024 GPU]")
    parser.add_argument("--st-batch-size", type=int, default=32, help="sentence-transformers batch size [32]")
    parser.add_argument("--only", action="append", help="sentemb methods, e.g. 'onnx int8' (repeatable)")
    parser.add_argument("--no-sts", action="store_true", help="skip STS dev Spearman")
    parser.add_argument("--no-peers", action="store_true", help="skip the peers' ONNX/OpenVINO/fastembed rows")
    parser.add_argument("--peer-exports", type=Path, default=None, help="keep the peers' exports here, for reuse")
    parser.add_argument("--no-startup", action="store_true", help="skip the startup timings")
    parser.add_argument("--plot", type=Path, default=None, help="write throughput vs batch size (png)")
    parser.add_argument("--plot-sizes", default="8,16,32,64,128,256")
    parser.add_argument("--plot-limit", type=int, default=1000, help="sentences per plot point [1000]")
    return parser.parse_args()


def main() -> None:
    args = _args()
    from sentemb.plan import BATCH_SIZE

    args.batch_size = args.batch_size or BATCH_SIZE[args.device.split(":")[0]]
    if args.device == "cpu":  # 2 cores: the tokenizer's threads would only compete with the model's
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentemb.models.resolve import bundled_default

    model = args.model or str(bundled_default())
    pick = held_out_sentences if args.held_out else unique_sentences
    texts = pick(args.data / "sts-train.csv", args.limit)
    names = set(args.only) if args.only else None
    print(cpu_line(), flush=True)
    methods = load_methods(names, model, args.device, args.batch_size, args.st_batch_size)
    if args.device == "cpu" and not args.no_peers:
        # calibration: the first 300 unique train sentences (with --held-out, none of them is timed)
        calibration = unique_sentences(args.data / "sts-train.csv", 300)
        methods += peer_methods(model, calibration, args.st_batch_size, args.peer_exports)
    for method in methods:  # warm-up (and the one-off ONNX export, if not cached)
        method.encode(texts[:512], 0)
    for _ in range(args.rounds):
        for method in methods:
            with PeakRss() as rss:
                start = time.perf_counter()
                method.vectors = method.encode(texts, 0)
                method.times.append(time.perf_counter() - start)
            method.peak_mb = max(method.peak_mb, rss.peak / 2**20)
    report(methods, texts, args)
    if args.plot:
        sizes = [int(s) for s in args.plot_sizes.split(",")]
        plot(methods, texts[: args.plot_limit], args.plot, sizes, args.rounds)


def report(methods: list[Method], texts: list[str], args: argparse.Namespace) -> None:
    """The table (rates, ratios to sentence-transformers, fidelity, memory), skipped rows and start-up times."""
    reference = methods[0]  # fidelity: sentence-transformers fp32
    base = methods[0 if args.device == "cpu" else 1]  # speed: sentence-transformers fp32 / fp16 (GPU)
    ref_rate = len(texts) / statistics.median(base.times)
    print(
        f"\n{len(texts)} unique STS train sentences, {args.rounds} interleaved rounds (median), "
        f"{hardware()}, sentemb batch {args.batch_size}; 1.00x = {base.label}\n"
    )
    print("| method | sentences/s | vs ST | rounds vs ST | max abs diff | mean cos | min cos | STS dev | load MB "
          "| peak MB |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method in methods:
        rate = len(texts) / statistics.median(method.times)
        assert method.vectors is not None and reference.vectors is not None
        diff, mean_cos, min_cos = fidelity(method.vectors, reference.vectors)
        sts = "" if args.no_sts else f"{sts_spearman(method, args.data / 'sts-dev.csv'):.2f}"
        print(
            f"| {method.label} | {rate:.0f} | {rate / ref_rate:.2f}x | {round_ratios(method, base)} | {diff:.1e} | "
            f"{mean_cos:.5f} | {min_cos:.4f} | {sts} | {method.load_mb:.0f} | {method.peak_mb:.0f} |",
            flush=True,
        )
    for label, why in SKIPPED:
        print(f"| {label} | skipped: {why} ||||||||")
    if not args.no_startup and args.device == "cpu":
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


if __name__ == "__main__":
    main()
