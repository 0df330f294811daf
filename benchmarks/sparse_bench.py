"""SPLADE encoding: sentemb's sparse encoder against sentence-transformers' SparseEncoder, in one process.

    .venv/bin/python benchmarks/sparse_bench.py                   # 1,000 unique STS dev sentences, 3 rounds
    .venv/bin/python benchmarks/sparse_bench.py --limit 500 --rounds 2 --skip-memory

The model has the default model's shape: all-MiniLM-L6-v2's encoder with a masked-language-model head
(its transform layer random, seed 0; the decoder tied to the word embeddings, as BERT's is) and
SpladePooling (max, relu), saved by sentence-transformers in ~/.cache/sentemb-bench/minilm-l6-splade
(built here when missing; never committed). Rounds are interleaved and the median counts.

Reported: texts/s of each method and its ratio to sentence-transformers (torch fp32, batch 32, its
default), against the goals (exact: >= 1.5x; int8: >= 3x); fidelity against sentence-transformers'
vectors (fp32: the same ids and the largest weight difference; int8: how many of each vector's 50
heaviest ids it keeps); and memory: the peak RSS of a fresh process that loads the model and encodes
1,000 texts in one call (each method in its own process, so that one's peak does not hide another's).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench import unique_sentences
from machine import cpu_line

ROOT = Path(__file__).resolve().parents[1]
DATA = next((p for p in (ROOT / "data" / "stsb", ROOT.parent / "shared" / "data" / "stsb") if p.is_dir()),
            ROOT / "data" / "stsb")  # fmt: skip
MODEL = Path.home() / ".cache" / "sentemb-bench" / "minilm-l6-splade"
ST_LABEL = "sentence-transformers fp32"
# label -> (backend, precision) of sentemb's rows
SENTEMB = {
    "sentemb torch fp32": ("torch", "fp32"),
    "sentemb onnx fp32": ("onnx", "fp32"),
    "sentemb openvino fp32": ("openvino", "fp32"),
    "sentemb auto fp32": ("auto", "fp32"),
    "sentemb onnx int8": ("onnx", "int8"),
    "sentemb openvino int8": ("openvino", "int8"),
    "sentemb auto int8": ("auto", "int8"),
}
GOALS = {"fp32": 1.5, "int8": 3.0}
TOP = 50


def build_model(folder: Path) -> Path:
    """all-MiniLM-L6-v2's encoder + a BERT masked-LM head (transform random, seed 0; decoder tied to the word
    embeddings) + SpladePooling, saved by sentence-transformers."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling
    from transformers import AutoTokenizer, BertForMaskedLM

    from sentemb.models.resolve import bundled_default

    mlm = folder.with_name(folder.name + "-mlm")
    torch.manual_seed(0)
    model = BertForMaskedLM.from_pretrained(bundled_default())
    model.save_pretrained(mlm)
    AutoTokenizer.from_pretrained(bundled_default()).save_pretrained(mlm)
    transformer = Transformer(str(mlm), transformer_task="fill-mask")
    SparseEncoder(modules=[transformer, SpladePooling("max", "relu")], device="cpu").save_pretrained(str(folder))
    return folder


def encoders(folder: Path, labels: list[str]) -> dict[str, Callable[[list[str]], np.ndarray]]:
    """label -> a function from texts to dense (N, vocab) float32 weights (loaded now, exports built now)."""
    import sentemb

    out: dict[str, Callable[[list[str]], np.ndarray]] = {}
    for label in labels:
        if label == ST_LABEL:
            from sentence_transformers import SparseEncoder

            st = SparseEncoder(str(folder), device="cpu")
            out[label] = lambda texts, st=st: st.encode(texts, convert_to_tensor=True).to_dense().numpy()
        else:
            backend, precision = SENTEMB[label]
            encoder = sentemb.load_sparse(str(folder), backend=backend, precision=precision, device="cpu")
            if backend == "auto":
                print(f"  {label} chose {encoder.backend}: {encoder.plan.why[0]}", file=sys.stderr)
            out[label] = lambda texts, e=encoder: e.encode(texts).to_dense()
    return out


def timed(encode: Callable[[list[str]], np.ndarray], texts: list[str]) -> float:
    started = time.perf_counter()
    encode(texts)
    return len(texts) / (time.perf_counter() - started)


def top_ids(weights: np.ndarray, k: int) -> list[set[int]]:
    """Each row's ``k`` heaviest non-zero ids."""
    return [set(np.flatnonzero(row)[np.argsort(-row[row != 0], kind="stable")[:k]].tolist()) for row in weights]


def fidelity(label: str, ours: np.ndarray, reference: np.ndarray) -> str:
    """fp32: the share of rows with exactly the reference's ids, and the largest weight difference;
    int8: the share of each row's 50 heaviest reference ids that are among its own 50 heaviest."""
    if label.endswith("fp32"):
        same = np.mean([np.array_equal(a != 0, b != 0) for a, b in zip(ours, reference, strict=True)])
        apart = (ours != 0) != (reference != 0)  # an id one side has and the other not: a logit at 0 +- rounding
        heaviest = max(float(ours[apart].max(initial=0)), float(reference[apart].max(initial=0)))
        return (f"same ids {same:.1%} of rows (ids apart weigh <= {heaviest:.0e}), "
                f"max |diff| {np.abs(ours - reference).max():.1e}")  # fmt: skip
    pairs = zip(top_ids(ours, TOP), top_ids(reference, TOP), strict=True)
    shared = sum(len(a & b) for a, b in pairs)
    total = sum(len(b) for b in top_ids(reference, TOP))
    return f"top-{TOP} ids agree {shared / total:.1%}"


def peak_rss(folder: Path, label: str, texts: Path) -> tuple[float, float]:
    """(RSS after loading, peak RSS) in MB of a fresh process that loads ``label`` and encodes the texts of the
    JSON file ``texts`` once."""
    code = (
        "import json, resource, sys; sys.path.insert(0, 'benchmarks'); import sparse_bench as b; "
        "from bench import rss_mb; from pathlib import Path; "
        f"texts = json.load(open({json.dumps(str(texts))})); "
        f"e = b.encoders(Path({json.dumps(str(folder))}), [{label!r}])[{label!r}]; loaded = rss_mb(); e(texts); "
        "print(loaded, b.high_water_mb())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded, peak = out.stdout.split()[-2:]
    return float(loaded), float(peak)


def high_water_mb() -> float:
    """This process's peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which a child inherits from its parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_rows(folder: Path, labels: list[str], texts: list[str]) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(texts[:1000], handle)
    print(f"\nmemory: a fresh process loads the model, then encodes {min(len(texts), 1000)} texts in one call")
    print(f"{'method':<28} {'after load MB':>14} {'peak MB':>9}")
    for label in labels:
        loaded, peak = peak_rss(folder, label, Path(handle.name))
        print(f"{label:<28} {loaded:>14.0f} {peak:>9.0f}")
    Path(handle.name).unlink()


def speed_rows(folder: Path, labels: list[str], texts: list[str], rounds: int) -> None:
    methods = encoders(folder, labels)
    for encode in methods.values():  # warm-up: first-call costs (allocators, thread pools) out of the rounds
        encode(texts[:64])
    rates: dict[str, list[float]] = {label: [] for label in labels}
    for _ in range(rounds):
        for label, encode in methods.items():
            rates[label].append(timed(encode, texts))
            print(f"  round: {label} {rates[label][-1]:.1f}/s", file=sys.stderr)
    reference = methods[ST_LABEL](texts)
    base = statistics.median(rates[ST_LABEL])
    print(f"\n{'method':<28} {'texts/s':>8} {'x ST':>6} {'goal':>6}  fidelity vs sentence-transformers")
    for label in labels:
        rate = statistics.median(rates[label])
        if label == ST_LABEL:
            print(f"{label:<28} {rate:>8.1f} {1.0:>6.2f} {'':>6}  (the reference, batch 32)")
            continue
        goal = GOALS[label.rsplit(" ", 1)[1]]
        verdict = "met" if rate / base >= goal else "MISSED"
        note = fidelity(label, methods[label](texts), reference)
        print(f"{label:<28} {rate:>8.1f} {rate / base:>6.2f} {goal:>5}x  {verdict}; {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=1000, help="texts per round (unique STS dev sentences)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None, help="sentemb rows to run (labels), default all")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true")
    args = parser.parse_args()
    print(cpu_line())
    folder = MODEL if (MODEL / "modules.json").is_file() else build_model(MODEL)
    texts = unique_sentences(DATA / "sts-dev.csv", args.limit)
    labels = [ST_LABEL, *(args.only or SENTEMB)]
    print(f"model: {folder} (all-MiniLM-L6-v2 encoder + MLM head, SpladePooling max relu); {len(texts)} texts, "
          f"{args.rounds} rounds, median")  # fmt: skip
    if not args.memory_only:
        speed_rows(folder, labels, texts, args.rounds)
    if not args.skip_memory:
        memory_rows(folder, labels, texts)
    print(f"peak RSS of this process: {high_water_mb():.0f} MB")


if __name__ == "__main__":
    main()
