"""Near-duplicate groups: every pair at cosine >= threshold joins one group; the first row represents it.

Pairs come from an exact blockwise scan for inputs up to ``EXACT_LIMIT`` rows (the n x n scores are
computed in blocks of ``block`` rows, never held whole), or from an HNSW index (each row's ``neighbours``
nearest, kept when at or above the threshold) for larger ones. Groups are the connected components of
the pairs (union-find), so A~B and B~C put A, B, C together even when A and C are further apart;
``similarity`` tells how close each row is to its group's representative.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sentemb.errors import ConfigError, VectorsError
from sentemb.retrieval.index import as_float_vectors

EXACT_LIMIT = 50_000
Progress = Callable[[int], None]  # called with the number of rows just finished


@dataclass(frozen=True)
class Duplicates:
    """Per input row: its group, its group's representative row, and its cosine to that representative."""

    group: np.ndarray  # int64, groups numbered 0.. in order of their representative
    representative: np.ndarray  # int64 row of the group's representative (itself for representatives)
    similarity: np.ndarray  # float32 cosine to the representative (1.0 for representatives)
    pairs: np.ndarray  # (m, 2) int64 row pairs i < j at or above the threshold
    pair_scores: np.ndarray  # (m,) float32

    @property
    def is_duplicate(self) -> np.ndarray:
        return self.representative != np.arange(len(self.representative))

    def group_sizes(self) -> list[int]:
        """Rows per group, in group order."""
        return np.bincount(self.group).tolist() if len(self.group) else []

    @property
    def groups(self) -> int:
        return int(self.group.max()) + 1 if len(self.group) else 0


def check_threshold(threshold: float) -> float:
    if not -1.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"threshold {threshold} is outside [-1, 1]; cosine similarity lies in that range")
    return float(threshold)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def exact_pairs(
    vectors: np.ndarray, threshold: float, *, block: int = 2048, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i < j) with cosine >= threshold, by a blockwise scan of the upper triangle."""
    unit = _unit(vectors)
    found_pairs: list[np.ndarray] = []
    found_scores: list[np.ndarray] = []
    for start in range(0, len(unit), block):
        scores = unit[start : start + block] @ unit[start:].T
        rows, cols = np.nonzero(scores >= threshold)
        keep = cols > rows  # upper triangle: j > i
        rows, cols = rows[keep], cols[keep]
        found_pairs.append(np.stack([rows + start, cols + start], axis=1))
        found_scores.append(scores[rows, cols])
        if progress:
            progress(min(block, len(unit) - start))
    return np.concatenate(found_pairs).astype(np.int64), np.concatenate(found_scores).astype(np.float32)


def index_pairs(
    vectors: np.ndarray, threshold: float, *, neighbours: int = 20, block: int = 4096, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) at or above the threshold among each row's ``neighbours`` nearest (HNSW index)."""
    from sentemb.retrieval.index import Index

    index = Index.build(vectors, output="float32")
    count = min(neighbours + 1, len(vectors))
    found_pairs: list[np.ndarray] = []
    found_scores: list[np.ndarray] = []
    for start in range(0, len(vectors), block):
        rows, scores = index.search_rows(vectors[start : start + block], count)
        mine = np.arange(start, start + len(rows))[:, None].repeat(rows.shape[1], axis=1)
        keep = (scores >= threshold) & (rows > mine)
        found_pairs.append(np.stack([mine[keep], rows[keep]], axis=1))
        found_scores.append(scores[keep])
        if progress:
            progress(len(rows))
    pairs = np.concatenate(found_pairs).astype(np.int64)
    scores = np.concatenate(found_scores).astype(np.float32)
    unique, first = np.unique(pairs, axis=0, return_index=True)
    return unique.reshape(-1, 2), scores[first]


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Each row's smallest connected row (union-find with path halving)."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs.tolist():
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([root(i) for i in range(n)], dtype=np.int64)


def find_duplicates(
    vectors: np.ndarray,
    threshold: float = 0.9,
    *,
    method: str = "auto",
    neighbours: int = 20,
    progress: Progress | None = None,
) -> Duplicates:
    """Near-duplicate groups of ``vectors`` at cosine >= ``threshold`` (see the module doc).

    ``method``: ``exact`` (blockwise scan), ``index`` (HNSW, each row's ``neighbours`` nearest) or
    ``auto`` (exact up to 50,000 rows).
    """
    check_threshold(threshold)
    floats = as_float_vectors(vectors, "vectors")
    if len(floats) == 0:
        raise VectorsError("no vectors to deduplicate: the input is empty")
    if method not in ("auto", "exact", "index"):
        raise ConfigError(f"method={method!r} is unknown; choose auto, exact or index")
    use_index = method == "index" or (method == "auto" and len(floats) > EXACT_LIMIT)
    if use_index:
        pairs, scores = index_pairs(floats, threshold, neighbours=neighbours, progress=progress)
    else:
        pairs, scores = exact_pairs(floats, threshold, progress=progress)
    representative = _components(len(floats), pairs)
    _, group = np.unique(representative, return_inverse=True)
    unit = _unit(floats)
    similarity = np.einsum("ij,ij->i", unit, unit[representative]).astype(np.float32)
    similarity[representative == np.arange(len(floats))] = 1.0
    return Duplicates(group.astype(np.int64), representative, similarity, pairs, scores)
