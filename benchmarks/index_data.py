"""Shared by the retrieval benchmarks: the CPU banner, STS sentences and their vectors (cached), timing helpers.

    PYTHONPATH=src .venv/bin/python benchmarks/index_data.py     # encodes and caches the STS vectors
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
STSB = ROOT.parent / "shared" / "data" / "stsb"
CACHE = Path(os.environ.get("SENTEMB_BENCH_CACHE", "/tmp/sentemb-bench"))
ISA = ("avx512_vnni", "avx512_bf16", "amx_tile", "avx512f", "avx2")


def cpu_banner() -> str:
    model, flags = platform.processor() or "unknown CPU", set()
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    isa = " ".join(f"{name}={'yes' if name in flags else 'no'}" for name in ISA)
    return f"CPU: {model}, {os.cpu_count()} cores; {isa}"


def sts_pairs() -> list[tuple[str, str, float]]:
    pairs = []
    for name in ("sts-train.csv", "sts-dev.csv"):
        for line in (STSB / name).read_text(encoding="utf-8").splitlines():
            cells = line.split("\t")
            if len(cells) >= 7:
                pairs.append((cells[5], cells[6], float(cells[4])))
    return pairs


def sts_vectors() -> tuple[list[str], np.ndarray]:
    """Unique STS train+dev sentences and their default-model vectors (encoded once, cached as .npy)."""
    sentences = list(dict.fromkeys(s for a, b, _ in sts_pairs() for s in (a, b)))
    path = CACHE / f"sts-minilm-{len(sentences)}.npy"
    if not path.is_file():
        import sentemb

        CACHE.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        vectors = sentemb.load(device="cpu").encode(sentences)
        print(f"encoded {len(sentences):,} STS sentences in {time.perf_counter() - started:.0f} s -> {path}")
        np.save(path, vectors)
    return sentences, np.load(path)


def exact_top(queries: np.ndarray, corpus: np.ndarray, k: int, block: int = 256) -> np.ndarray:
    """Exact cosine top-k rows (vectors are unit length), blockwise."""
    out = []
    for start in range(0, len(queries), block):
        scores = queries[start : start + block] @ corpus.T
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        out.append(np.take_along_axis(part, order, axis=1))
    return np.concatenate(out)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)]))


def timed(call, *args, **kwargs):
    started = time.perf_counter()
    result = call(*args, **kwargs)
    return result, time.perf_counter() - started


if __name__ == "__main__":
    print(cpu_banner())
    texts, vecs = sts_vectors()
    print(len(texts), vecs.shape)
