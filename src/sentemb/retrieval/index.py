"""``sentemb.Index``: approximate nearest neighbour search over float32, int8 or binary vectors (usearch).

    index = sentemb.Index.build(vectors, ids=ids, output="binary", model=encoder)
    index.save("docs.index")
    hits = sentemb.Index.load("docs.index").search(encoder.encode(["a query"]), k=10, model=encoder)

Quantised indexes search with quantised queries for ``k x rescore_multiplier`` candidates, then
rescore them with the float query (the sentence-transformers recipe): against the index's own codes
(``rescore="codes"``: dequantised int8, or the 0/1 bits for binary), or against an int8 or float32
copy kept in a memory-mapped file beside the index (``rescore="int8" | "float"``), so only the small
codes live in RAM. ``exact=True`` scans all codes (no graph; smallest); otherwise an HNSW graph.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from sentemb.errors import ConfigError, IndexFileError, ModelMismatchError, VectorsError
from sentemb.retrieval.quantize import dequantize, quantization_ranges, quantize
from sentemb.retrieval.stores import FlatStore, GraphStore, Store

INDEX_OUTPUTS = ("float32", "int8", "binary")
RESCORE = ("codes", "int8", "float", "none")
# Defaults measured on STS (benchmarks/index_recall.py): binary needs an int8 copy and x10 for recall@10 >= 0.95;
# its own bits (sentence-transformers' recipe) stop near 0.76. int8 codes reach 0.99 at x4.
DEFAULT_RESCORE = {"float32": "codes", "int8": "codes", "binary": "int8"}
DEFAULT_MULTIPLIER = {"float32": 1, "int8": 4, "binary": 10}
# Model facts that decide the vectors; a query or add() must match them ("model" itself is informative).
COMPARED = ("sha256", "dim", "pooling", "normalize")
RECORDED = ("model", "revision", "sha256", "dim", "pooling", "normalize", "max_length", "precision", "backend")


class IndexHit(NamedTuple):
    """One search result: the id carried from the input, its score (higher is closer) and its row."""

    id: Any
    score: float
    row: int


@dataclass(frozen=True, kw_only=True)
class IndexOptions:
    """How an index stores and searches its vectors (saved with it)."""

    output: str = "float32"  # stored type: float32, int8 or binary (packed bits)
    exact: bool = False  # True: scan every code (no graph); False: HNSW graph
    rescore: str = "codes"  # quantised indexes: codes, int8 or float (a memory-mapped copy), none
    rescore_multiplier: int = 4  # candidates fetched per hit before rescoring (DEFAULT_MULTIPLIER)
    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 64

    def __post_init__(self) -> None:
        if self.output not in INDEX_OUTPUTS:
            raise ConfigError(f"index output {self.output!r} is unknown; choose one of {', '.join(INDEX_OUTPUTS)}")
        if self.rescore not in RESCORE:
            raise ConfigError(f"rescore={self.rescore!r} is unknown; choose one of {', '.join(RESCORE)}")
        if self.rescore in ("int8", "float") and self.output != "binary":
            raise ConfigError(f"rescore={self.rescore!r} is for binary indexes; use rescore='codes' with {self.output}")
        for name in ("rescore_multiplier", "connectivity", "expansion_add", "expansion_search"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")


def model_facts(model: Any) -> dict[str, Any]:
    """The recorded facts of ``model``: an Encoder, its ``describe()`` (or that as a dict), or None."""
    if model is None:
        return {}
    if hasattr(model, "describe"):
        model = model.describe()
    described = model.to_dict() if hasattr(model, "to_dict") else dict(model)
    return {key: described[key] for key in RECORDED if key in described}


def as_float_vectors(vectors: Any, what: str) -> np.ndarray:
    array = np.asarray(vectors)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise VectorsError(f"{what} must be a 2-D array of vectors, not shape {array.shape}")
    if array.dtype.kind != "f":
        raise VectorsError(f"{what} must be float vectors, not {array.dtype}; pass the unquantised vectors")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise VectorsError(f"{what} hold NaN or infinite values; re-encode them")
    return array


def as_ids(ids: Any, start: int, count: int) -> np.ndarray:
    """Ids as an int64 or str array; None numbers rows from ``start``."""
    if ids is None:
        return np.arange(start, start + count, dtype=np.int64)
    values = list(ids)
    if len(values) != count:
        raise VectorsError(f"{len(values)} ids for {count} vectors; give one id per vector")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64)
    if all(isinstance(v, str) for v in values):
        return np.asarray(values, dtype=str)
    raise VectorsError("ids must be all integers or all strings")


class Index:
    """Vectors (float32, int8 or binary codes), their ids and the model they came from; see the module doc."""

    def __init__(
        self, *, options: IndexOptions, dim: int, store: Store, ids: np.ndarray, model: dict[str, Any],
        ranges: np.ndarray | None, side: np.ndarray | None,
    ) -> None:  # fmt: skip
        self.options = options
        self.dim = dim
        self.store = store
        self.ids = ids
        self.model = model
        self.ranges = ranges
        self.side = side  # the int8/float32 rescoring copy of a binary index, or None

    @classmethod
    def build(
        cls,
        vectors: Any,
        ids: Any = None,
        *,
        output: str = "float32",
        model: Any = None,
        ranges: np.ndarray | None = None,
        calibration: np.ndarray | None = None,
        exact: bool = False,
        rescore: str | None = None,
        rescore_multiplier: int | None = None,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
    ) -> Index:
        """An index over float ``vectors`` (shape (n, dim)) with ``ids`` (default 0..n-1).

        ``output`` picks the stored type; int8 ranges come from ``ranges``, else ``calibration``,
        else the vectors. ``model`` (an Encoder or its ``describe()``) is recorded and checked on search.
        ``connectivity``, ``expansion_add`` and ``expansion_search`` are the HNSW graph's (ignored when
        ``exact``): a smaller ``expansion_add`` builds faster at some recall.
        """
        if output not in INDEX_OUTPUTS:
            raise ConfigError(f"index output {output!r} is unknown; choose one of {', '.join(INDEX_OUTPUTS)}")
        rescore = rescore or DEFAULT_RESCORE[output]
        options = IndexOptions(output=output, exact=exact, rescore=rescore, connectivity=connectivity,
                               expansion_add=expansion_add, expansion_search=expansion_search,
                               rescore_multiplier=rescore_multiplier or DEFAULT_MULTIPLIER[output])  # fmt: skip
        floats = as_float_vectors(vectors, "vectors")
        if len(floats) == 0:
            raise VectorsError("no vectors to index: the corpus is empty")
        facts = model_facts(model)
        if "dim" in facts and int(facts["dim"]) != floats.shape[1]:
            raise VectorsError(f"vectors have {floats.shape[1]} dimensions but the model makes {facts['dim']}")
        needs_ranges = output == "int8" or rescore == "int8"
        if needs_ranges and ranges is None:
            ranges = quantization_ranges(floats if calibration is None else calibration)
        dim = floats.shape[1]
        width = (dim + 7) // 8 if output == "binary" else dim
        store: Store
        if exact:
            store = FlatStore(np.zeros((0, width), dtype=_code_dtype(output)), output)
        else:
            store = GraphStore.create(options, width)
        side: np.ndarray | None = None
        if rescore in ("int8", "float"):
            side = np.zeros((0, dim), _side_dtype(rescore))
        index = cls(options=options, dim=dim, store=store, ids=np.zeros(0, np.int64), model=facts,
                    ranges=None if ranges is None else np.asarray(ranges, np.float32), side=side)  # fmt: skip
        index.add(floats, ids)
        return index

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        name = self.model.get("model", "unknown model")
        return f"Index({len(self)} x {self.dim}, output={self.options.output!r}, exact={self.options.exact}, {name})"

    def check_model(self, model: Any) -> None:
        """Raise ModelMismatchError when ``model``'s facts differ from the ones recorded at build time."""
        facts = model_facts(model)
        differ = [key for key in COMPARED if key in facts and key in self.model and facts[key] != self.model[key]]
        if differ:
            raise ModelMismatchError(
                f"the index was built with {self.model.get('model', 'another model')} but these vectors come from "
                f"{facts.get('model', 'another model')} ({', '.join(differ)} differ); encode with the index's model "
                "or rebuild the index"
            )

    def add(self, vectors: Any, ids: Any = None, *, model: Any = None) -> None:
        """Append float vectors (and their ids) to the index."""
        self.check_model(model)
        floats = as_float_vectors(vectors, "vectors")
        if floats.shape[1] != self.dim:
            raise VectorsError(f"vectors have {floats.shape[1]} dimensions but the index holds {self.dim}")
        new_ids = as_ids(ids, len(self.ids), len(floats))
        if len(self.ids) and new_ids.dtype.kind != self.ids.dtype.kind:
            raise VectorsError("new ids must be of the same kind (integers or strings) as the index's")
        self.store.add(self._codes(floats))
        if self.side is not None:
            extra = quantize(floats, "int8", ranges=self.ranges) if self.options.rescore == "int8" else floats
            self.side = np.concatenate([self.side, extra]) if len(self.side) else np.array(extra)
        self.ids = np.concatenate([self.ids, new_ids]) if len(self.ids) else new_ids

    def _codes(self, floats: np.ndarray) -> np.ndarray:
        output = self.options.output
        if output == "binary":
            return quantize(floats, "ubinary")
        if output == "int8":
            return quantize(floats, output, ranges=self.ranges)
        return floats / np.maximum(np.linalg.norm(floats, axis=1, keepdims=True), 1e-12)  # cosine = inner product

    def search(
        self, queries: Any, k: int = 10, *, model: Any = None, rescore_multiplier: int | None = None
    ) -> list[list[IndexHit]]:
        """For each float query vector, the ``k`` closest entries, best first."""
        rows, scores = self.search_rows(queries, k, model=model, rescore_multiplier=rescore_multiplier)
        return [
            [IndexHit(self.ids[r].item(), float(s), int(r)) for r, s in zip(row, score, strict=True) if r >= 0]
            for row, score in zip(rows, scores, strict=True)
        ]

    def search_rows(
        self, queries: Any, k: int = 10, *, model: Any = None, rescore_multiplier: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores), both (len(queries), k), best first; a row of -1 marks a slot with no match."""
        self.check_model(model)
        floats = as_float_vectors(queries, "query vectors")
        if floats.shape[1] != self.dim:
            raise VectorsError(
                f"query vectors have {floats.shape[1]} dimensions but the index holds {self.dim}; "
                "encode the queries with the index's model"
            )
        if not 1 <= k <= len(self):
            raise ConfigError(f"k={k} but the index holds {len(self)} vectors; use 1 <= k <= {len(self)}")
        output, rescore = self.options.output, self.options.rescore
        multiplier = rescore_multiplier or self.options.rescore_multiplier
        rescoring = output != "float32" and rescore != "none"
        count = min(len(self), k * multiplier) if rescoring else k
        rows, distances, valid = self.store.search(self._codes(floats), count)
        if not rescoring:
            scores = 1 - 2 * distances / (self.store_width * 8) if output == "binary" else 1 - distances
            return _finish(rows, scores, valid, k)
        return _finish(rows, self._rescore(floats, rows, valid), valid, k)

    @property
    def store_width(self) -> int:
        return (self.dim + 7) // 8 if self.options.output == "binary" else self.dim

    def _rescore(self, floats: np.ndarray, rows: np.ndarray, valid: np.ndarray) -> np.ndarray:
        safe = np.where(valid, rows, rows[valid][0] if valid.any() else 0)
        rescore = self.options.rescore
        if rescore == "codes" and self.options.output == "int8":
            return _int8_scores(floats, self.store.get(safe), self.ranges)
        if rescore == "codes":
            candidates = dequantize(self.store.get(safe), "ubinary", dim=self.dim)
        else:
            if self.side is None:
                raise IndexFileError(f"rescore={rescore!r} but the index has no rescoring copy; rebuild it")
            picked = np.asarray(self.side[safe.reshape(-1)]).reshape(*safe.shape, self.dim)
            if rescore == "int8":
                return _int8_scores(floats, picked, self.ranges)
            candidates = picked
        if rescore == "float":
            norms = np.linalg.norm(candidates, axis=-1) * np.linalg.norm(floats, axis=-1)[:, None]
            return np.einsum("ij,ikj->ik", floats, candidates) / np.maximum(norms, 1e-12)
        return np.einsum("ij,ikj->ik", floats.astype(np.float64), candidates.astype(np.float64))

    def memory(self) -> dict[str, int]:
        """Bytes of the searched structure (codes, graph, ids) and of the memory-mapped rescoring copy."""
        side = 0 if self.side is None else int(self.side.nbytes)
        return {"index": self.store.nbytes + int(self.ids.nbytes), "rescore": side}

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> None:
        """Write the index to the folder ``path`` atomically (a temporary folder, then a rename)."""
        from sentemb.retrieval.indexfile import save_index

        save_index(self, path, force=force)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = True, verify: bool = True) -> Index:
        """Read an index folder; ``verify`` checks each file's sha256, ``mmap`` maps flat codes and rescoring copy."""
        from sentemb.retrieval.indexfile import load_index

        return load_index(cls, path, mmap=mmap, verify=verify)

    def describe(self) -> dict[str, Any]:
        return {"count": len(self), "dim": self.dim, "options": asdict(self.options), "model": dict(self.model),
                "memory": self.memory()}  # fmt: skip


def _finish(rows: np.ndarray, scores: np.ndarray, valid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.where(valid, scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    rows = np.take_along_axis(np.where(valid, rows, -1), order, axis=1)
    return rows, np.take_along_axis(scores, order, axis=1).astype(np.float32)


def _int8_scores(floats: np.ndarray, codes: np.ndarray, ranges: np.ndarray | None) -> np.ndarray:
    """q . dequantize(codes) without building the float candidates: (q * step) . (code + 128) + q . min."""
    if ranges is None:
        raise IndexFileError("an int8 index without its ranges cannot rescore; rebuild it")
    bounds = ranges.astype(np.float32)
    steps = (bounds[1] - bounds[0]) / 255
    steps = np.where(steps == 0, 1, steps).astype(np.float32)
    shifted = codes.astype(np.float32) + 128
    return np.einsum("ij,ikj->ik", floats * steps, shifted) + (floats @ bounds[0])[:, None]


def _code_dtype(output: str) -> type:
    return {"float32": np.float32, "int8": np.int8, "binary": np.uint8}[output]


def _side_dtype(rescore: str) -> type:
    return np.int8 if rescore == "int8" else np.float32
