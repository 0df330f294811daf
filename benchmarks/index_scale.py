"""sentemb.Index at scale: 1,000,000 synthetic 384-d vectors shaped like real sentence embeddings.

Float exact, float HNSW, int8 HNSW, binary exact (no rescoring) and binary + float rescoring
(exact and HNSW): index memory, build time, queries/s and recall@10 against exact float search on
1,000 queries. Exact float search is the truth, so its recall is 1 by definition.

The vectors are not isotropic noise (on which every method looks bad: all neighbours are equally far):
they grow from the STS train+dev vectors of all-MiniLM-L6-v2 by repeated branching. Each generation
adds one child per existing vector, the parent plus Gaussian noise with the covariance of the real
vectors (so the noise lies where real embeddings vary) at a random scale, renormalised. That gives
neighbours at many distances, as real corpora have. Queries are fresh children of corpus rows. The
banner prints top-1/top-10/random cosines of the synthetic and the real (STS paraphrase) queries.

On 2 shared cores an HNSW graph of a million 384-d rows with connectivity 16 and expansion_add 128
takes well over half an hour, so the graph settings are flags (passed to `Index.build`; the defaults
here are lower than the library's; the output says which were used). Progress goes to stderr.

    PYTHONPATH=src .venv/bin/python benchmarks/index_scale.py [--rows 1000000] [--connectivity 8]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from index_data import exact_top, recall, sts_vectors, timed
from index_libraries import sts_split
from machine import cpu_line

import sentemb
from sentemb.retrieval.index import Index

CHUNK = 100_000


def grow(rows: int, queries: int, seed: int = 0, noise: tuple[float, float] = (0.2, 0.5)):
    """(corpus, queries): unit vectors grown from the STS vectors by branching (see the module doc)."""
    _, real = sts_vectors()
    values, axes = np.linalg.eigh(np.cov((real - real.mean(0)).T))
    root = (axes * np.sqrt(np.maximum(values, 0))).astype(np.float32)  # noise = z @ root.T has real's covariance
    rng = np.random.default_rng(seed)

    def children(parents: np.ndarray) -> np.ndarray:
        out = np.empty_like(parents)
        for start in range(0, len(parents), CHUNK):
            part = parents[start : start + CHUNK]
            scale = rng.uniform(*noise, (len(part), 1)).astype(np.float32)
            child = part + scale * (rng.standard_normal(part.shape, dtype=np.float32) @ root.T)
            out[start : start + len(part)] = child / np.linalg.norm(child, axis=1, keepdims=True)
        return out

    corpus = np.empty((rows, real.shape[1]), np.float32)
    size = min(rows, len(real))
    corpus[:size] = real[:size]
    while size < rows:
        grown = min(size, rows - size)
        corpus[size : size + grown] = children(corpus[:grown])
        size += grown
    return corpus, children(corpus[rng.integers(0, rows, queries)])


def shape_line(name: str, queries: np.ndarray, corpus: np.ndarray) -> str:
    top = exact_top(queries[:200], corpus, 10)
    sims = np.einsum("qd,qkd->qk", queries[:200], corpus[top])
    rand = float(np.mean(corpus[:500] @ corpus[-500:].T))
    top1, top10 = sims[:, 0].mean(), sims[:, 9].mean()
    return f"{name}: query cosine top-1 {top1:.3f}, top-10 {top10:.3f}; random pairs {rand:.3f}"


def graph_index(corpus: np.ndarray, output: str, rescore: str, multiplier: int, args: argparse.Namespace) -> Index:
    """An HNSW index with this run's graph settings, built in chunks with progress and an ETA on stderr."""
    started = time.perf_counter()
    first = min(CHUNK, len(corpus))  # int8 ranges come from the first chunk
    index = sentemb.Index.build(corpus[:first], np.arange(first), output=output, rescore=rescore,
                                rescore_multiplier=multiplier, connectivity=args.connectivity,
                                expansion_add=args.expansion_add)  # fmt: skip
    for start in range(0, len(corpus), CHUNK):
        done = min(start + CHUNK, len(corpus))
        if start:
            index.add(corpus[start:done], np.arange(start, done))
        spent = time.perf_counter() - started
        print(f"  {output} hnsw: {done:,} rows in {spent:.0f} s (eta {spent / done * (len(corpus) - done):.0f} s)",
              file=sys.stderr, flush=True)  # fmt: skip
    return index


def measure(corpus: np.ndarray, queries: np.ndarray, args: argparse.Namespace, k: int = 10) -> None:
    configs = [
        ("float32 exact", lambda: sentemb.Index.build(corpus, exact=True), None),
        ("binary exact, no rescore", lambda: sentemb.Index.build(corpus, output="binary", exact=True, rescore="none"),
         None),
        ("binary exact, rescore float x10",
         lambda: sentemb.Index.build(corpus, output="binary", exact=True, rescore="float"), 10),
        ("binary exact, rescore int8 x10",
         lambda: sentemb.Index.build(corpus, output="binary", exact=True, rescore="int8"), 10),
        ("float32 hnsw", lambda: graph_index(corpus, "float32", "codes", 4, args), None),
        ("int8 hnsw, rescore codes x4", lambda: graph_index(corpus, "int8", "codes", 4, args), None),
        ("binary hnsw, rescore float x10", lambda: graph_index(corpus, "binary", "float", 10, args), None),
    ]  # fmt: skip
    skip = set(args.skip)
    configs = [c for c in configs if not any(word in c[0] for word in skip)]
    truth = None if configs and configs[0][0] == "float32 exact" else exact_top(queries, corpus, k)
    float_ram = corpus.nbytes + 8 * len(corpus)  # what a flat float32 index holds: vectors and int64 ids
    print(f"{'index':34} {'recall@10':>9} {'QPS':>8} {'build s':>8} {'RAM MB':>8} {'mapped MB':>9} {'x less':>7}")
    for name, make, multiplier in configs:
        print(f"building {name} ...", file=sys.stderr, flush=True)
        index, build = timed(make)
        graph = getattr(index.store, "graph", None)
        for beam in args.expansion_search if graph is not None else [None]:
            label = name if beam is None else f"{name}, ef {beam}"
            if graph is not None:
                graph.expansion_search = beam
            index.search_rows(queries[:5], k, rescore_multiplier=multiplier)  # warm up
            (rows, _), seconds = timed(index.search_rows, queries, k, rescore_multiplier=multiplier)
            truth = rows if truth is None else truth  # exact float search
            memory = index.memory()
            print(f"{label:34} {recall(rows, truth):9.3f} {len(queries) / seconds:8,.0f} {build:8.1f} "
                  f"{memory['index'] / 1e6:8.1f} {memory['rescore'] / 1e6:9.1f} {float_ram / memory['index']:7.1f}",
                  flush=True)  # fmt: skip
        del index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--connectivity", type=int, default=8, help="HNSW links per node (library default 16)")
    parser.add_argument("--expansion-add", type=int, default=40, help="HNSW build beam (library default 128)")
    parser.add_argument(
        "--expansion-search",
        type=int,
        nargs="+",
        default=[64],
        help="HNSW search beams to measure each graph at (library default 64)",
    )
    parser.add_argument("--skip", nargs="*", default=[], help="skip configs whose name contains a word, e.g. hnsw")
    args = parser.parse_args()
    print(cpu_line())
    (corpus, queries), seconds = timed(grow, args.rows, args.queries)
    print(f"synthetic: {len(corpus):,} x {corpus.shape[1]} unit vectors grown from STS in {seconds:.0f} s, "
          f"{len(queries):,} queries; HNSW connectivity {args.connectivity}, expansion_add {args.expansion_add}, "
          f"expansion_search {args.expansion_search}")  # fmt: skip
    real_corpus, real_queries = sts_split()
    print(shape_line("  STS (real)", real_queries, real_corpus))
    print(shape_line("  synthetic", queries, corpus), flush=True)
    measure(corpus, queries, args)


if __name__ == "__main__":
    main()
