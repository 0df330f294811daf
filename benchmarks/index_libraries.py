"""Which ANN library: usearch vs faiss-cpu vs hnswlib, HNSW (M=16, ef_construction=128, ef_search=64), one thread.

Corpus: STS train+dev sentences (default model); queries: the second sentence of 1,000 pairs scored >= 4
(their partner stays in the corpus, the query itself does not). Also 20,000 synthetic clustered vectors
for build speed. Recall@10 is against exact float search; memory is the serialized index size.

    PYTHONPATH=src .venv/bin/python benchmarks/index_libraries.py [--synthetic 20000]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import tempfile

import numpy as np
from index_data import exact_top, recall, sts_pairs, sts_vectors, timed
from machine import cpu_line

M, EF_ADD, EF_SEARCH, K = 16, 128, 64, 10


def sts_split(seed: int = 0):
    sentences, vectors = sts_vectors()
    row = {s: i for i, s in enumerate(sentences)}
    pairs = [(a, b) for a, b, score in sts_pairs() if score >= 4 and a != b]
    rng = np.random.default_rng(seed)
    picked = [pairs[i] for i in rng.choice(len(pairs), 1000, replace=False)]
    query_rows = sorted({row[b] for _, b in picked})
    keep = np.setdiff1d(np.arange(len(sentences)), query_rows)
    return vectors[keep], vectors[query_rows]


def synthetic(n: int, dim: int = 384, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim)).astype(np.float32)
    x = centres[rng.integers(0, 2000, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.integers(0, n, 500)] + 0.3 * rng.standard_normal((500, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q.astype(np.float32)


def run_usearch(corpus, queries, kind):
    from usearch.index import Index

    from sentemb import quantize

    dim = corpus.shape[1]
    if kind == "binary":
        index, data, q = (
            Index(
                ndim=dim, metric="hamming", dtype="b1", connectivity=M, expansion_add=EF_ADD, expansion_search=EF_SEARCH
            ),
            quantize(corpus, "ubinary"),
            quantize(queries, "ubinary"),
        )
    else:
        # unit vectors: ip == cos for f32 (usearch's f32 cos kernel is 2-3x slower); i8 needs cos (it scales by 127)
        index = Index(
            ndim=dim,
            metric="cos" if kind == "int8" else "ip",
            dtype="i8" if kind == "int8" else "f32",
            connectivity=M,
            expansion_add=EF_ADD,
            expansion_search=EF_SEARCH,
        )
        data, q = corpus, queries  # usearch scales f32 -> i8 itself for cos
    _, build = timed(index.add, np.arange(len(data)), data, threads=1)
    matches, seconds = timed(index.search, q, K, threads=1)
    return np.asarray(matches.keys), build, seconds, index.serialized_length


def run_faiss(corpus, queries, kind):
    import faiss

    from sentemb import quantize

    faiss.omp_set_num_threads(1)
    dim = corpus.shape[1]
    if kind == "binary":
        index = faiss.IndexBinaryHNSW(dim, M)
        data, q = quantize(corpus, "ubinary"), quantize(queries, "ubinary")
    elif kind == "int8":
        index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, M, faiss.METRIC_INNER_PRODUCT)
        data, q = corpus, queries
    else:
        index = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT)
        data, q = corpus, queries
    index.hnsw.efConstruction = EF_ADD
    if kind == "int8":
        index.train(data)
    _, build = timed(index.add, data)
    index.hnsw.efSearch = EF_SEARCH
    (_, rows), seconds = timed(index.search, q, K)
    size = len(faiss.serialize_index_binary(index) if kind == "binary" else faiss.serialize_index(index))
    return rows, build, seconds, size


def run_hnswlib(corpus, queries, kind):
    import hnswlib

    if kind != "float32":
        return None
    index = hnswlib.Index(space="ip", dim=corpus.shape[1])
    index.init_index(max_elements=len(corpus), ef_construction=EF_ADD, M=M)
    index.set_num_threads(1)
    _, build = timed(index.add_items, corpus, np.arange(len(corpus)))
    index.set_ef(EF_SEARCH)
    (rows, _), seconds = timed(index.knn_query, queries, K)
    with tempfile.TemporaryDirectory() as folder:
        index.save_index(f"{folder}/h.bin")
        size = os.path.getsize(f"{folder}/h.bin")
    return rows, build, seconds, size


def table(name, corpus, queries):
    truth = exact_top(queries, corpus, K)
    print(f"\n{name}: {len(corpus):,} x {corpus.shape[1]} corpus, {len(queries):,} queries, recall@{K} vs exact float")
    print(f"{'library':10} {'type':8} {'recall@10':>9} {'build s':>8} {'QPS':>8} {'index MB':>9} {'bytes/vec':>9}")
    for library, run in (("usearch", run_usearch), ("faiss", run_faiss), ("hnswlib", run_hnswlib)):
        for kind in ("float32", "int8", "binary"):
            out = run(corpus, queries, kind)
            if out is None:
                print(f"{library:10} {kind:8} {'(not supported)':>9}")
                continue
            rows, build, seconds, size = out
            print(
                f"{library:10} {kind:8} {recall(rows, truth):9.3f} {build:8.2f} {len(queries) / seconds:8,.0f} "
                f"{size / 1e6:9.2f} {size / len(corpus):9.0f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--synthetic", type=int, default=20_000)
    args = parser.parse_args()
    print(cpu_line())
    print("versions: " + ", ".join(f"{p} {md.version(p)}" for p in ("usearch", "faiss-cpu", "hnswlib")))
    print("(quantised rows: no rescoring, the raw quantised search)")
    table("STS train+dev (all-MiniLM-L6-v2)", *sts_split())
    if args.synthetic:
        table("synthetic clustered unit vectors", *synthetic(args.synthetic))


if __name__ == "__main__":
    main()
