"""Hybrid search: the hit lists of several retrievers (a dense and a sparse one) fused into one ranking,
and recall@k to measure any ranking against labelled relevant rows.

Two fusions, both pure functions of the hit lists (no model, no corpus):

* ``rrf``: reciprocal rank fusion (Cormack et al., 2009): a row scores ``sum(weight / (k + rank))``
  over the lists that hold it (rank from 1); only ranks count, so scores on different scales need no
  normalising. ``k = 60`` is the paper's value and Elasticsearch's and Qdrant's default.
* ``weighted``: each list's scores min-max normalised to [0, 1] per query (its best hit 1, its
  worst 0; a list whose scores are all equal gives them all 1), then summed with the weights; a row
  missing from a list gets 0 from it. This is Weaviate's "relativeScoreFusion".

Ties are broken by the lower corpus row, so a fusion is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np

from sentemb.errors import ConfigError
from sentemb.similarity import Hit

FUSIONS = ("rrf", "weighted")
RRF_K = 60

Ranking = Sequence[Sequence[Hit]]  # per query: one retriever's hits, best first


def reciprocal_rank_fusion(
    rankings: Sequence[Ranking], top_k: int, *, k: int = RRF_K, weights: Sequence[float] | None = None
) -> list[list[Hit]]:
    """Per query, the ``top_k`` rows by ``sum(weight / (k + rank))`` over ``rankings`` (one per retriever)."""
    weights = _weights(rankings, weights)
    if k < 0:
        raise ConfigError(f"the rank constant k must be at least 0, got {k}")

    def scores(hits: Sequence[Hit]) -> np.ndarray:
        return 1.0 / (k + np.arange(1, len(hits) + 1, dtype=np.float64))

    return _fuse(rankings, weights, scores, top_k)


def weighted_fusion(
    rankings: Sequence[Ranking], top_k: int, *, weights: Sequence[float] | None = None
) -> list[list[Hit]]:
    """Per query, the ``top_k`` rows by the weighted sum of each list's min-max normalised scores."""
    return _fuse(rankings, _weights(rankings, weights), min_max, top_k)


def fuse(
    method: str, rankings: Sequence[Ranking], top_k: int, *, weights: Sequence[float] | None = None
) -> list[list[Hit]]:
    """:func:`reciprocal_rank_fusion` (``method="rrf"``) or :func:`weighted_fusion` (``"weighted"``)."""
    if method == "rrf":
        return reciprocal_rank_fusion(rankings, top_k, weights=weights)
    if method == "weighted":
        return weighted_fusion(rankings, top_k, weights=weights)
    raise ConfigError(f"fusion {method!r} is not known; choose one of {', '.join(FUSIONS)}")


def min_max(hits: Sequence[Hit]) -> np.ndarray:
    """The hits' scores scaled to [0, 1]: the best 1, the worst 0; all 1 when they are all equal."""
    values = np.array([hit.score for hit in hits], dtype=np.float64)
    if len(values) == 0:
        return values
    low, high = float(values.min()), float(values.max())
    if high - low <= 0.0:
        return np.ones_like(values)
    return (values - low) / (high - low)


def recall_at_k(found: Sequence[Sequence[Hit | int]], relevant: Sequence[Collection[int]], k: int) -> float:
    """The mean over queries of the share of each query's relevant rows found in its first ``k`` hits
    (queries with no relevant row are left out; hits are :class:`Hit` or row numbers)."""
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if len(found) != len(relevant):
        raise ConfigError(f"{len(found)} hit lists for {len(relevant)} queries' relevant rows; give one per query")
    shares = []
    for hits, wanted in zip(found, relevant, strict=True):
        if not wanted:
            continue
        rows = {hit.corpus_id if isinstance(hit, Hit) else int(hit) for hit in list(hits)[:k]}
        shares.append(len(rows & set(wanted)) / len(wanted))
    if not shares:
        raise ConfigError("no query has a relevant row: recall is undefined")
    return float(np.mean(shares))


def _weights(rankings: Sequence[Ranking], weights: Sequence[float] | None) -> list[float]:
    if not rankings:
        raise ConfigError("nothing to fuse: give at least one retriever's hits")
    if len({len(ranking) for ranking in rankings}) != 1:
        raise ConfigError("each retriever must give one hit list per query (the same queries, in the same order)")
    if weights is None:
        return [1.0] * len(rankings)
    chosen = [float(w) for w in weights]
    if len(chosen) != len(rankings) or any(not np.isfinite(w) or w < 0 for w in chosen) or sum(chosen) <= 0:
        raise ConfigError(f"weights {chosen} must be {len(rankings)} numbers >= 0, not all 0 (one per retriever)")
    return chosen


def _fuse(
    rankings: Sequence[Ranking], weights: list[float], scores_of: Callable[[Sequence[Hit]], np.ndarray], top_k: int
) -> list[list[Hit]]:
    if top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}")
    fused: list[list[Hit]] = []
    for per_query in zip(*rankings, strict=True):
        total: dict[int, float] = {}
        for hits, weight in zip(per_query, weights, strict=True):
            for hit, score in zip(hits, scores_of(hits), strict=True):
                total[hit.corpus_id] = total.get(hit.corpus_id, 0.0) + weight * float(score)
        best = sorted(total.items(), key=lambda item: (-item[1], item[0]))[:top_k]
        fused.append([Hit(row, score) for row, score in best])
    return fused
