"""Similarity matrices and chunked top-k semantic search over float32 vectors.

The four scores of sentence-transformers' ``similarity_fn_name``, with its values and signs:
cosine, dot, and the negated euclidean and manhattan distances (higher is always more similar).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sentemb.errors import ConfigError

SIMILARITY_FNS = ("cosine", "dot", "euclidean", "manhattan")


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


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _matrix(a), _matrix(b)
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"vectors differ in size: {a.shape[1]} vs {b.shape[1]}; encode both with the same model")
    return a, b


def _check_fn(name: str) -> str:
    if name not in SIMILARITY_FNS:
        raise ConfigError(f"similarity function {name!r} is not known; choose one of {', '.join(SIMILARITY_FNS)}")
    return name


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cos_sim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b``: shape (len(a), len(b))."""
    a, b = _pair(a, b)
    return _unit(a) @ _unit(b).T


def dot_score(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot product of every row of ``a`` with every row of ``b``."""
    a, b = _pair(a, b)
    return a @ b.T


def euclidean_sim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Negated euclidean distance of every row of ``a`` to every row of ``b``."""
    a, b = _pair(a, b)
    squared = (a * a).sum(axis=1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(axis=1)[None, :]
    return -np.sqrt(np.maximum(squared, 0.0)).astype(np.float32)


def manhattan_sim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Negated manhattan (L1) distance of every row of ``a`` to every row of ``b``."""
    a, b = _pair(a, b)
    out = np.empty((len(a), len(b)), dtype=np.float32)
    for row, vector in enumerate(a):  # one row at a time: (len(b), dim) in memory, never (len(a), len(b), dim)
        out[row] = -np.abs(b - vector).sum(axis=1)
    return out


_MATRIX = {"cosine": cos_sim, "dot": dot_score, "euclidean": euclidean_sim, "manhattan": manhattan_sim}


def similarity_matrix(a: np.ndarray, b: np.ndarray, fn: str = "cosine") -> np.ndarray:
    """Scores of every row of ``a`` with every row of ``b`` by ``fn`` (one of :data:`SIMILARITY_FNS`)."""
    return _MATRIX[_check_fn(fn)](a, b)


def similarity_pairwise(a: np.ndarray, b: np.ndarray, fn: str = "cosine") -> np.ndarray:
    """Scores of ``a[i]`` with ``b[i]`` by ``fn``: shape (len(a),)."""
    a, b = _pair(a, b)
    if len(a) != len(b):
        raise ConfigError(f"pairwise similarity needs as many rows in a as in b, got {len(a)} and {len(b)}")
    fn = _check_fn(fn)
    if fn == "cosine":
        return (_unit(a) * _unit(b)).sum(axis=1)
    if fn == "dot":
        return (a * b).sum(axis=1)
    if fn == "euclidean":
        return -np.linalg.norm(a - b, axis=1).astype(np.float32)
    return -np.abs(a - b).sum(axis=1, dtype=np.float32)


def semantic_search(
    queries: np.ndarray,
    corpus: np.ndarray,
    top_k: int = 10,
    *,
    score: str = "cosine",
    chunk_size: int = 100_000,
) -> list[list[Hit]]:
    """For each query, the ``top_k`` best corpus rows, best first (corpus scanned in chunks).

    ``score`` is one of :data:`SIMILARITY_FNS` (the distances rank nearest first).
    """
    score = _check_fn(score)
    q, c = _pair(queries, corpus)
    if score == "cosine":
        q, c = _unit(q), _unit(c)
    scorer = dot_score if score in ("cosine", "dot") else _MATRIX[score]
    k = max(0, min(top_k, len(c)))
    best_scores = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(q), 0), dtype=np.int64)
    for start in range(0, len(c), chunk_size):
        scores = scorer(q, c[start : start + chunk_size])
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
