"""Similarity matrices and chunked top-k semantic search over float32 vectors."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sentemb.errors import ConfigError


class Hit(NamedTuple):
    """One search result: the corpus row and its score."""

    corpus_id: int
    score: float


def _matrix(x: np.ndarray) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ConfigError(f"expected a vector or a 2-D array of vectors, got shape {arr.shape}")
    return arr


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cos_sim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b``: shape (len(a), len(b))."""
    a, b = _matrix(a), _matrix(b)
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"vectors differ in size: {a.shape[1]} vs {b.shape[1]}")
    return _unit(a) @ _unit(b).T


def dot_score(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot product of every row of ``a`` with every row of ``b``."""
    return _matrix(a) @ _matrix(b).T


def semantic_search(
    queries: np.ndarray,
    corpus: np.ndarray,
    top_k: int = 10,
    *,
    score: str = "cosine",
    chunk_size: int = 100_000,
) -> list[list[Hit]]:
    """For each query, the ``top_k`` best corpus rows, best first (corpus scanned in chunks)."""
    if score not in ("cosine", "dot"):
        raise ConfigError(f"score={score!r}: choose 'cosine' or 'dot'")
    q, c = _matrix(queries), _matrix(corpus)
    if score == "cosine":
        q, c = _unit(q), _unit(c)
    k = max(0, min(top_k, len(c)))
    best_scores = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(q), 0), dtype=np.int64)
    for start in range(0, len(c), chunk_size):
        scores = q @ c[start : start + chunk_size].T
        keep = min(k, scores.shape[1])
        part = np.argpartition(-scores, keep - 1, axis=1)[:, :keep] if keep else np.zeros((len(q), 0), int)
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, axis=1)], axis=1)
        best_ids = np.concatenate([best_ids, part + start], axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(best_scores, order, axis=1)
        best_ids = np.take_along_axis(best_ids, order, axis=1)
    return [
        [Hit(int(i), float(s)) for i, s in zip(ids, row, strict=True)]
        for ids, row in zip(best_ids, best_scores, strict=True)
    ]
