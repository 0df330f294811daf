"""Hybrid search on STS: recall@10 of the dense default model, a sparse (SPLADE) model alone, and both fused
by reciprocal rank fusion and by a weighted sum of min-max normalised scores (sentemb.retrieval.hybrid).

The labelled set: every STS pair scored >= 4 (the same meaning) is a query (its sentence1) whose relevant
row is its sentence2; the corpus is every sentence2 of the split(s), duplicates once. Each side retrieves
100 rows per query; the fusions cut the fused list at 10.

The sparse model must carry lexical signal (a random MLM head has none): by default the SPLADE-shaped
folder ~/.cache/sentemb-bench/minilm-l6-splade (the default model's shape, BertForMaskedLM with its
decoder tied to the word embeddings, so each token's logits peak at itself and its neighbours: "cat sat
on the mat" -> cat, sat, mat, sitting, cats). Give another with --sparse-model.

    PYTHONPATH=src .venv/bin/python benchmarks/hybrid_sts.py [--split dev|train+dev] [--sparse-model DIR]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from machine import cpu_line

os.environ.setdefault("HF_HUB_OFFLINE", "1")
STSB = Path(__file__).resolve().parents[1] / "data" / "stsb"
SPLADE = Path.home() / ".cache" / "sentemb-bench" / "minilm-l6-splade"
DEPTH = 100  # rows each side retrieves per query before fusion
K = 10


def labelled(split: str) -> tuple[list[str], list[str], list[set[int]]]:
    """(queries, corpus, relevant corpus rows per query) from the STS pairs scored >= 4."""
    names = {"dev": ["sts-dev.csv"], "train+dev": ["sts-train.csv", "sts-dev.csv"]}[split]
    pairs = []
    for name in names:
        for line in (STSB / name).read_text(encoding="utf-8").splitlines():
            cells = line.split("\t")
            if len(cells) >= 7:
                pairs.append((cells[5], cells[6], float(cells[4])))
    corpus = list(dict.fromkeys(second for _, second, _ in pairs))
    row = {text: i for i, text in enumerate(corpus)}
    relevant: dict[str, set[int]] = {}
    for first, second, score in pairs:
        if score >= 4.0:
            relevant.setdefault(first, set()).add(row[second])
    return list(relevant), corpus, list(relevant.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["dev", "train+dev"], default="train+dev")
    parser.add_argument("--sparse-model", default=str(SPLADE))
    args = parser.parse_args()
    print(cpu_line())
    import sentemb
    from sentemb.retrieval.hybrid import fuse, recall_at_k
    from sentemb.sparse_vectors import sparse_search

    if not Path(args.sparse_model).is_dir():
        raise SystemExit(f"{args.sparse_model}: no sparse model folder; give one with --sparse-model")
    queries, corpus, relevant = labelled(args.split)
    print(f"STS {args.split}: {len(queries):,} queries (pairs scored >= 4), a corpus of {len(corpus):,} sentences")
    started = time.perf_counter()
    dense_model = sentemb.load()
    dense = sentemb.semantic_search(dense_model.encode_query(queries), dense_model.encode_document(corpus), DEPTH)
    dense_s = time.perf_counter() - started
    started = time.perf_counter()
    sparse_model = sentemb.load_sparse(args.sparse_model)
    sparse = sparse_search(sparse_model.encode_query(queries), sparse_model.encode_document(corpus), DEPTH)
    sparse_s = time.perf_counter() - started
    print(f"dense: {dense_model.config.model} ({dense_s:.0f} s); sparse: {args.sparse_model} ({sparse_s:.0f} s, "
          f"{sparse_model.backend} {sparse_model.plan.precision})")  # fmt: skip
    rows = [("dense", dense), ("sparse", sparse)]
    for method in ("rrf", "weighted"):
        rows.append((f"hybrid {method}", fuse(method, [dense, sparse], K)))
    print(f"{'method':<16} {'recall@1':>9} {'recall@10':>10}")
    for name, hits in rows:
        print(f"{name:<16} {recall_at_k(hits, relevant, 1):9.3f} {recall_at_k(hits, relevant, K):10.3f}")


if __name__ == "__main__":
    main()
