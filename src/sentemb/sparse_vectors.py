"""Sparse vectors (SPLADE-style: a weight per vocabulary id) as one type, and their scores.

A batch of sparse vectors is held in CSR layout: row ``i``'s ids are
``indices[indptr[i]:indptr[i + 1]]``, ascending and unique, with their weights in ``values``
(float32, never zero). Scoring is the dot product, as sentence-transformers' ``SparseEncoder``
scores SPLADE models; it needs neither scipy nor torch (``to_scipy`` is there for users who want
scipy's matrices).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from sentemb.errors import ConfigError, VectorsError
from sentemb.extras import require
from sentemb.similarity import Hit

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix


class SparseVector(NamedTuple):
    """One text's sparse vector: vocabulary ids (ascending, int32) and their weights (float32)."""

    indices: np.ndarray
    values: np.ndarray


@dataclass(frozen=True, eq=False)
class SparseEmbeddings(Sequence[SparseVector]):
    """The sparse vectors of a batch of texts, in CSR layout over a vocabulary of ``dim`` ids.

    ``vocabulary`` (id -> token) is what :meth:`decode` shows; a model's encode fills it in.
    """

    indptr: np.ndarray  # int64, (N + 1,)
    indices: np.ndarray  # int32, (nnz,)
    values: np.ndarray  # float32, (nnz,)
    dim: int
    vocabulary: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        indptr = np.asarray(self.indptr, dtype=np.int64)
        indices = np.asarray(self.indices, dtype=np.int32)
        values = np.asarray(self.values, dtype=np.float32)
        if indptr.ndim != 1 or len(indptr) == 0 or indptr[0] != 0 or indptr[-1] != len(indices):
            raise VectorsError("sparse vectors: indptr must start at 0 and end at the number of stored weights")
        if len(indices) != len(values) or np.any(np.diff(indptr) < 0):
            raise VectorsError("sparse vectors: indices and values differ in length, or indptr decreases")
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= self.dim):
            raise VectorsError(f"sparse vectors: an id lies outside the vocabulary of {self.dim}")
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "values", values)

    @classmethod
    def from_dense(
        cls, matrix: np.ndarray, *, max_active_dims: int | None = None, vocabulary: Sequence[str] | None = None
    ) -> SparseEmbeddings:
        """The non-zero entries of a ``(N, dim)`` matrix; with ``max_active_dims``, only each row's largest
        that many by absolute value (as sentence-transformers keeps them: the top-k of ``abs``, the rest set
        to zero; which of equal weights at the cut survive is not specified, there as here)."""
        dense = np.asarray(matrix, dtype=np.float32)
        if dense.ndim != 2:
            raise VectorsError(f"sparse vectors come from a 2-D matrix, got shape {dense.shape}")
        if max_active_dims is not None and max_active_dims < 1:
            raise VectorsError(f"max_active_dims must be at least 1, got {max_active_dims}")
        if max_active_dims is not None and max_active_dims < dense.shape[1]:
            keep = np.argpartition(-np.abs(dense), max_active_dims - 1, axis=1)[:, :max_active_dims]
            kept = np.zeros_like(dense)
            np.put_along_axis(kept, keep, np.take_along_axis(dense, keep, axis=1), axis=1)
            dense = kept
        rows, cols = np.nonzero(dense)  # row-major: each row's ids ascending
        indptr = np.zeros(len(dense) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(dense)), out=indptr[1:])
        return cls(indptr, cols, dense[rows, cols], dense.shape[1], _vocab(vocabulary))

    @classmethod
    def from_rows(
        cls, rows: Sequence[tuple[Sequence[int], Sequence[float]]], dim: int, vocabulary: Sequence[str] | None = None
    ) -> SparseEmbeddings:
        """Vectors given as (ids, weights) per text (read back from a file or a request); ids are sorted
        and must be unique."""
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        all_ids: list[np.ndarray] = []
        all_values: list[np.ndarray] = []
        for i, (ids, weights) in enumerate(rows):
            ids_arr = np.asarray(ids, dtype=np.int64)
            vals = np.asarray(weights, dtype=np.float32)
            if ids_arr.shape != vals.shape or ids_arr.ndim != 1:
                raise VectorsError(f"sparse vector {i}: ids and weights must be two lists of the same length")
            order = np.argsort(ids_arr, kind="stable")
            ids_arr, vals = ids_arr[order], vals[order]
            if len(ids_arr) > 1 and np.any(np.diff(ids_arr) == 0):
                raise VectorsError(f"sparse vector {i}: an id appears twice")
            all_ids.append(ids_arr)
            all_values.append(vals)
            indptr[i + 1] = indptr[i] + len(ids_arr)
        indices = np.concatenate(all_ids) if all_ids else np.zeros(0, np.int64)
        values = np.concatenate(all_values) if all_values else np.zeros(0, np.float32)
        return cls(indptr, indices, values, dim, _vocab(vocabulary))

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self.take(range(len(self))[i])
        if not -len(self) <= i < len(self):
            raise IndexError(f"sparse vector {i} of {len(self)}")
        i %= len(self)
        lo, hi = self.indptr[i], self.indptr[i + 1]
        return SparseVector(self.indices[lo:hi], self.values[lo:hi])

    def __iter__(self) -> Iterator[SparseVector]:
        return (self[i] for i in range(len(self)))

    def take(self, rows: Sequence[int]) -> SparseEmbeddings:
        """The vectors of ``rows``, in that order."""
        picked = [self[int(r)] for r in rows]
        return SparseEmbeddings.from_rows([(v.indices, v.values) for v in picked], self.dim, self.vocabulary)

    @staticmethod
    def concat(parts: Sequence[SparseEmbeddings]) -> SparseEmbeddings:
        """The vectors of ``parts`` one after another (all over the same vocabulary)."""
        if not parts:
            raise VectorsError("nothing to join: no sparse vectors given")
        if len({p.dim for p in parts}) != 1:
            raise VectorsError("sparse vectors over different vocabularies cannot be joined")
        offsets = np.cumsum([0] + [p.indptr[-1] for p in parts[:-1]])
        indptr = np.concatenate([[0]] + [p.indptr[1:] + off for p, off in zip(parts, offsets, strict=True)])
        return SparseEmbeddings(
            indptr,
            np.concatenate([p.indices for p in parts]),
            np.concatenate([p.values for p in parts]),
            parts[0].dim,
            parts[0].vocabulary,
        )

    def nnz_per_row(self) -> np.ndarray:
        """How many ids each vector has."""
        return np.diff(self.indptr)

    def to_dense(self) -> np.ndarray:
        """A ``(N, dim)`` float32 matrix (large: dim is the vocabulary)."""
        out = np.zeros((len(self), self.dim), dtype=np.float32)
        out[np.repeat(np.arange(len(self)), self.nnz_per_row()), self.indices] = self.values
        return out

    def to_scipy(self) -> csr_matrix:
        """A ``scipy.sparse.csr_matrix`` of shape ``(N, dim)`` (needs scipy)."""
        sparse = require("scipy.sparse", "sparse", "SparseEmbeddings.to_scipy")
        return sparse.csr_matrix((self.values, self.indices, self.indptr), shape=(len(self), self.dim))

    def decode(self, top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """Each vector as (token, weight) pairs, heaviest first; ``top_k`` keeps that many."""
        if self.vocabulary is None:
            raise VectorsError("these sparse vectors carry no vocabulary; decode them with the model that made them")
        out = []
        for vec in self:
            order = np.argsort(-vec.values, kind="stable")[:top_k]
            out.append([(self.vocabulary[int(vec.indices[j])], float(vec.values[j])) for j in order])
        return out

    def __repr__(self) -> str:
        return f"SparseEmbeddings({len(self)} vectors, dim={self.dim}, {len(self.values)} weights)"


def _vocab(vocabulary: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if vocabulary is None else tuple(vocabulary)


def sparse_dot(a: SparseEmbeddings, b: SparseEmbeddings) -> np.ndarray:
    """Dot product of every vector of ``a`` with every vector of ``b``: float32, ``(len(a), len(b))``."""
    if a.dim != b.dim:
        raise ConfigError(f"sparse vectors differ in vocabulary ({a.dim} vs {b.dim}); encode both with the same model")
    scores = np.zeros((len(a), len(b)), dtype=np.float32)
    if len(b) == 0 or len(b.values) == 0:
        return scores
    nonempty = np.flatnonzero(b.nnz_per_row())
    starts = b.indptr[nonempty]
    query = np.zeros(a.dim, dtype=np.float32)
    for i, vec in enumerate(a):
        query[vec.indices] = vec.values
        products = query[b.indices] * b.values
        scores[i, nonempty] = np.add.reduceat(products, starts)
        query[vec.indices] = 0.0
    return scores


def sparse_search(
    queries: SparseEmbeddings, corpus: SparseEmbeddings, top_k: int = 10, chunk_size: int = 10_000
) -> list[list[Hit]]:
    """The ``top_k`` corpus vectors of each query by dot product, best first (ties: the lower row first),
    scoring the corpus ``chunk_size`` vectors at a time."""
    if top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}")
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(corpus), chunk_size):
        part = corpus[start : start + chunk_size]
        scores = np.concatenate([best_scores, sparse_dot(queries, part)], axis=1)
        ids = np.concatenate(
            [best_ids, np.broadcast_to(np.arange(start, start + len(part)), scores[:, -len(part) :].shape)], axis=1
        )
        order = np.lexsort((ids, -scores), axis=1)[:, :top_k]
        best_scores = np.take_along_axis(scores, order, axis=1)
        best_ids = np.take_along_axis(ids, order, axis=1)
    return [
        [Hit(int(c), float(s)) for c, s in zip(row_ids, row_scores, strict=True)]
        for row_ids, row_scores in zip(best_ids, best_scores, strict=True)
    ]
