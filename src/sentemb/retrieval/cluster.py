"""Clustering: community detection exactly as sentence-transformers defines it, k-means and HDBSCAN.

``community_detection`` follows ``sentence_transformers.util.community_detection``: a row whose
``min_community_size``-th most similar row (itself included) is at cosine >= ``threshold`` is a
centre; its community is every row at or above the threshold, most similar first. Communities are
taken largest first (ties: lower centre first), dropping rows already taken, and kept if still at
least ``min_community_size`` large; the kept ones are sorted by their final size (stable), the
centre first in each. Rows in no community get -1.
``kmeans`` and ``hdbscan`` use scikit-learn (``pip install 'sentemb[cluster]'``) on unit vectors.
``projection_2d`` is the PCA map the cluster plot draws (numpy only).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sentemb.errors import ConfigError, VectorsError
from sentemb.extras import require
from sentemb.retrieval.dedup import check_threshold
from sentemb.retrieval.index import as_float_vectors

Progress = Callable[[int], None]


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _checked(vectors: np.ndarray) -> np.ndarray:
    floats = as_float_vectors(vectors, "vectors")
    if len(floats) == 0:
        raise VectorsError("no vectors to cluster: the input is empty")
    return floats


def community_detection(
    vectors: np.ndarray,
    threshold: float = 0.75,
    min_community_size: int = 10,
    *,
    batch_size: int = 1024,
    progress: Progress | None = None,
) -> list[list[int]]:
    """Communities (lists of rows, centre first), largest first; see the module doc."""
    check_threshold(threshold)
    if min_community_size < 1:
        raise ConfigError(f"min_community_size must be at least 1, not {min_community_size}")
    unit = _unit(_checked(vectors))
    if len(unit) < min_community_size:
        return []
    candidates: list[tuple[int, np.ndarray]] = []
    for start in range(0, len(unit), batch_size):
        scores = unit[start : start + batch_size] @ unit.T
        kth = -np.partition(-scores, min_community_size - 1, axis=1)[:, min_community_size - 1]
        for offset in np.flatnonzero(kth >= threshold).tolist():
            row = scores[offset]
            members = np.flatnonzero(row >= threshold)
            members = members[np.argsort(-row[members], kind="stable")]
            candidates.append((start + offset, members))
        if progress:
            progress(len(scores))
    candidates.sort(key=lambda item: len(item[1]), reverse=True)
    used = np.zeros(len(unit), dtype=bool)
    communities: list[list[int]] = []
    for centre, members in candidates:
        if used[centre]:
            continue
        free = members[~used[members]]
        if len(free) >= min_community_size:
            community = [centre, *free[free != centre].tolist()]
            communities.append(community)
            used[community] = True
    return sorted(communities, key=len, reverse=True)  # stable: equal sizes keep the order they were taken


def labels_from_communities(communities: list[list[int]], n: int) -> np.ndarray:
    """Per row, its community's number (0 = the largest) or -1."""
    labels = np.full(n, -1, dtype=np.int64)
    for number, community in enumerate(communities):
        labels[community] = number
    return labels


def kmeans(vectors: np.ndarray, n_clusters: int, *, seed: int = 0) -> np.ndarray:
    """k-means labels (scikit-learn) of the unit vectors; clusters renumbered largest first."""
    floats = _checked(vectors)
    if not 1 <= n_clusters <= len(floats):
        raise ConfigError(f"n_clusters={n_clusters} but there are {len(floats)} vectors; use 1..{len(floats)}")
    cluster = require("sklearn.cluster", "cluster", "k-means clustering")
    model = cluster.KMeans(n_clusters=n_clusters, random_state=seed, n_init="auto")
    return _largest_first(model.fit_predict(_unit(floats)))


def hdbscan(vectors: np.ndarray, *, min_cluster_size: int = 5) -> np.ndarray:
    """HDBSCAN labels (scikit-learn) of the unit vectors, -1 for noise; clusters renumbered largest first."""
    floats = _checked(vectors)
    if min_cluster_size < 2:
        raise ConfigError(f"min_cluster_size must be at least 2, not {min_cluster_size}")
    cluster = require("sklearn.cluster", "cluster", "HDBSCAN clustering")
    model = cluster.HDBSCAN(min_cluster_size=min_cluster_size, copy=True)
    return _largest_first(model.fit_predict(_unit(floats)))


def projection_2d(vectors: np.ndarray, *, max_rows: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rows, points): a seeded sample of at most ``max_rows`` rows and their first two principal
    components (PCA of the unit vectors, by SVD), shape (len(rows), 2), for a scatter plot."""
    floats = _checked(vectors)
    rows = np.arange(len(floats))
    if len(rows) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(len(floats), max_rows, replace=False))
    sample = _unit(floats[rows]).astype(np.float64)
    sample -= sample.mean(axis=0)
    _, _, axes = np.linalg.svd(sample, full_matrices=False)
    points = sample @ axes[:2].T
    if points.shape[1] < 2:  # one-dimensional vectors: a flat second axis
        points = np.hstack([points, np.zeros((len(points), 2 - points.shape[1]))])
    return rows, points


def _largest_first(labels: np.ndarray) -> np.ndarray:
    found = labels[labels >= 0]
    if not len(found):
        return labels.astype(np.int64)
    names, sizes = np.unique(found, return_counts=True)
    order = names[np.argsort(-sizes, kind="stable")]
    mapping = {int(old): new for new, old in enumerate(order)}
    return np.array([mapping.get(int(label), -1) for label in labels], dtype=np.int64)
