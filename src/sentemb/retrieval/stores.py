"""Where an index keeps its codes: a flat array searched exhaustively, or a usearch HNSW graph.

Both answer the same four questions (add rows, search codes, get the codes of rows, how many bytes),
so :class:`sentemb.Index` never asks which one it holds. Rows are numbered 0..n-1 in insertion order;
the caller maps rows to ids. Distances are usearch's: ``1 - dot`` of unit float32 rows, ``1 - cos`` for int8,
bit differences (Hamming) for binary.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sentemb.extras import require

if TYPE_CHECKING:
    from sentemb.retrieval.index import IndexOptions

USEARCH_DTYPES = {"float32": "f32", "int8": "i8", "binary": "b1"}


def _usearch() -> Any:
    return require("usearch.index", "index", "sentemb.Index")


def metric_of(output: str) -> str:
    """float32 rows are stored unit length, so inner product is cosine (and 2-3x faster than usearch's cos)."""
    return {"float32": "ip", "int8": "cos", "binary": "hamming"}[output]


class Store(Protocol):
    def add(self, codes: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, distances, valid) of shape (len(queries), count); invalid slots are padding."""

    def get(self, rows: np.ndarray) -> np.ndarray: ...

    @property
    def nbytes(self) -> int: ...

    def save(self, folder: Path) -> list[str]:
        """Write the store's files into ``folder``; returns their names."""


class FlatStore:
    """Codes in one array, scanned in blocks with BLAS (no graph: smallest, exact).

    Measured on STS (12k x 384, 2 cores): usearch's exact ``search`` managed ~110 queries/s on float32
    and ~600/s on bits; a blockwise matrix product does thousands, also for bits (unpacked to +-1 per block).
    """

    FILE = "vectors.npy"
    BLOCK = 32_768

    def __init__(self, codes: np.ndarray, output: str) -> None:
        self.codes = codes
        self.output = output

    def add(self, codes: np.ndarray) -> None:
        self.codes = np.concatenate([self.codes, codes]) if len(self.codes) else np.array(codes)

    def search(self, queries: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        probe = self._as_float(queries)
        if self.output == "int8":
            probe /= np.maximum(np.linalg.norm(probe, axis=1, keepdims=True), 1e-12)
        best_rows = np.zeros((len(queries), 0), dtype=np.int64)
        best = np.zeros((len(queries), 0), dtype=np.float32)
        for start in range(0, len(self.codes), self.BLOCK):
            block = self._as_float(np.asarray(self.codes[start : start + self.BLOCK]))
            scores = probe @ block.T
            if self.output == "int8":
                scores /= np.maximum(np.linalg.norm(block, axis=1), 1e-12)
            keep = min(count, scores.shape[1])
            part = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
            best = np.concatenate([best, np.take_along_axis(scores, part, axis=1)], axis=1)
            best_rows = np.concatenate([best_rows, part + start], axis=1)
            order = np.argsort(-best, axis=1, kind="stable")[:, :count]
            best, best_rows = np.take_along_axis(best, order, axis=1), np.take_along_axis(best_rows, order, axis=1)
        bits = self.codes.shape[1] * 8
        distances = (bits - best) / 2 if self.output == "binary" else 1 - best
        return best_rows, distances.astype(np.float64), np.ones(best_rows.shape, dtype=bool)

    def _as_float(self, codes: np.ndarray) -> np.ndarray:
        """float32 rows for a matrix product: as stored, or +-1 per bit (dot = bits - 2 x Hamming)."""
        if self.output == "binary":
            return np.unpackbits(codes, axis=1).astype(np.float32) * 2 - 1
        return codes.astype(np.float32)

    def get(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.codes[rows])

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes)

    def save(self, folder: Path) -> list[str]:
        np.save(folder / self.FILE, np.ascontiguousarray(self.codes), allow_pickle=False)
        return [self.FILE]

    @classmethod
    def load(cls, folder: Path, options: IndexOptions, mmap: bool) -> FlatStore:
        return cls(np.load(folder / cls.FILE, mmap_mode="r" if mmap else None, allow_pickle=False), options.output)


class GraphStore:
    """An HNSW graph (usearch) over the codes: sub-linear search, about 2 x connectivity x 4 bytes a row more."""

    FILE = "graph.usearch"

    def __init__(self, graph: Any, output: str) -> None:
        self.graph = graph
        self.output = output

    @classmethod
    def create(cls, options: IndexOptions, width: int) -> GraphStore:
        output = options.output
        graph = _usearch().Index(
            ndim=width * 8 if output == "binary" else width, metric=metric_of(output), dtype=USEARCH_DTYPES[output],
            connectivity=options.connectivity, expansion_add=options.expansion_add,
            expansion_search=options.expansion_search,
        )  # fmt: skip
        return cls(graph, output)

    def add(self, codes: np.ndarray) -> None:
        start = len(self.graph)
        self.graph.add(np.arange(start, start + len(codes), dtype=np.uint64), np.ascontiguousarray(codes))

    def search(self, queries: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _matches(self.graph.search(queries, count), len(queries), count)

    def get(self, rows: np.ndarray) -> np.ndarray:
        flat = np.stack(self.graph.get(rows.reshape(-1).astype(np.uint64)))
        return flat.reshape(*rows.shape, -1)

    @property
    def nbytes(self) -> int:
        return int(self.graph.serialized_length)

    def save(self, folder: Path) -> list[str]:
        self.graph.save(str(folder / self.FILE))
        return [self.FILE]

    @classmethod
    def load(cls, folder: Path, options: IndexOptions, mmap: bool) -> GraphStore:
        del mmap  # the graph is searched in RAM (a viewed graph cannot take add())
        graph = _usearch().Index.restore(str(folder / cls.FILE), view=False)
        # usearch's file keeps the graph (and its connectivity), not its build and search beams
        graph.expansion_add, graph.expansion_search = options.expansion_add, options.expansion_search
        return cls(graph, options.output)


def _matches(matches: Any, queries: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = np.asarray(matches.keys, dtype=np.int64).reshape(queries, -1)
    distances = np.asarray(matches.distances, dtype=np.float64).reshape(queries, -1)
    counts = np.asarray(getattr(matches, "counts", rows.shape[1])).reshape(-1, 1)
    valid = np.arange(rows.shape[1]) < counts
    return rows, distances, valid
