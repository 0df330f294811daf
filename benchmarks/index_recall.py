"""sentemb.Index: recall@10 against exact float search, queries per second and memory, per stored type and rescoring.

STS train+dev sentences (all-MiniLM-L6-v2) with paraphrase queries (the second sentence of 1,000 pairs
scored >= 4), then N synthetic clustered 384-d unit vectors (default 1,000,000; flat indexes only, since
building an HNSW graph of a million rows takes longer than this machine's budget).
"RAM MB" is what search touches (codes, graph, ids); "mapped MB" is the rescoring copy kept in a
memory-mapped file (read for k x multiplier rows per query). "x less" compares RAM with float32.

    PYTHONPATH=src .venv/bin/python benchmarks/index_recall.py [--synthetic 1000000]
"""

from __future__ import annotations

import argparse

import numpy as np
from index_data import exact_top, recall, timed
from index_libraries import sts_split
from machine import cpu_line

import sentemb

STS_CONFIGS = [
    ("float32 exact", {"output": "float32", "exact": True}, None),
    ("float32 hnsw", {"output": "float32"}, None),
    ("int8 hnsw, rescore codes x4", {"output": "int8"}, 4),
    ("int8 exact, rescore codes x4", {"output": "int8", "exact": True}, 4),
    ("binary exact, no rescore", {"output": "binary", "exact": True, "rescore": "none"}, None),
    ("binary exact, rescore codes x4 (ST)", {"output": "binary", "exact": True, "rescore": "codes"}, 4),
    ("binary exact, rescore codes x10 (ST)", {"output": "binary", "exact": True, "rescore": "codes"}, 10),
    ("binary exact, rescore int8 x4", {"output": "binary", "exact": True, "rescore": "int8"}, 4),
    ("binary exact, rescore int8 x10", {"output": "binary", "exact": True, "rescore": "int8"}, 10),
    ("binary exact, rescore float x4", {"output": "binary", "exact": True, "rescore": "float"}, 4),
    ("binary exact, rescore float x10", {"output": "binary", "exact": True, "rescore": "float"}, 10),
    ("binary hnsw, rescore float x10", {"output": "binary", "rescore": "float"}, 10),
    ("binary hnsw, rescore int8 x10 (default)", {"output": "binary"}, None),
]
SCALE_CONFIGS = [c for c in STS_CONFIGS if c[1].get("exact") and c[0] != "int8 exact, rescore codes x4"]


def measure(corpus, queries, configs, k=10):
    truth = exact_top(queries, corpus, k)
    float_ram = None
    print(f"{'index':38} {'recall@10':>9} {'QPS':>8} {'build s':>8} {'RAM MB':>8} {'mapped MB':>9} {'x less':>7}")
    for name, options, multiplier in configs:
        index, build = timed(sentemb.Index.build, corpus, **options)
        index.search_rows(queries[:5], k, rescore_multiplier=multiplier)  # warm up
        (rows, _), seconds = timed(index.search_rows, queries, k, rescore_multiplier=multiplier)
        memory = index.memory()
        float_ram = float_ram or memory["index"]
        print(
            f"{name:38} {recall(rows, truth):9.3f} {len(queries) / seconds:8,.0f} {build:8.1f} "
            f"{memory['index'] / 1e6:8.1f} {memory['rescore'] / 1e6:9.1f} {float_ram / memory['index']:7.1f}"
        )
        del index


def synthetic(n, dim=384, queries=200, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(10, n // 500), dim)).astype(np.float32)
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        part = centres[rng.integers(0, len(centres), min(100_000, n - start))]
        part = part + 0.5 * rng.standard_normal(part.shape).astype(np.float32)
        x[start : start + len(part)] = part / np.linalg.norm(part, axis=1, keepdims=True)
    q = x[rng.integers(0, n, queries)] + 0.3 * rng.standard_normal((queries, dim)).astype(np.float32)
    return x, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--synthetic", type=int, default=1_000_000)
    args = parser.parse_args()
    print(cpu_line())
    corpus, queries = sts_split()
    print(f"\nSTS train+dev: {len(corpus):,} x {corpus.shape[1]} corpus, {len(queries):,} paraphrase queries")
    measure(corpus, queries, STS_CONFIGS)
    if args.synthetic:
        corpus, queries = synthetic(args.synthetic)
        print(f"\nsynthetic: {len(corpus):,} x {corpus.shape[1]} clustered unit vectors, {len(queries)} queries")
        measure(corpus, queries, SCALE_CONFIGS)


if __name__ == "__main__":
    main()
