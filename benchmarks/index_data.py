"""Shared by the retrieval benchmarks: STS sentences and their vectors (cached), timing and recall helpers.

    PYTHONPATH=src .venv/bin/python benchmarks/index_data.py     # encodes and caches the STS vectors
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from machine import cpu_line

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
STSB = ROOT / "data" / "stsb"
CACHE = Path(os.environ.get("SENTEMB_BENCH_CACHE", "/tmp/sentemb-bench"))


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
    print(cpu_line())
    texts, vecs = sts_vectors()
    print(len(texts), vecs.shape)
