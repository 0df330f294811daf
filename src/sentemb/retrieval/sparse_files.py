"""Sparse vector files in and out: JSON lines, Parquet, and ``sentemb batch`` folders of sparse shards.

* JSON lines: one ``{"id": ..., "indices": [...], "values": [...]}`` per text, ids ascending (the shape
  fastembed's ``SparseEmbedding`` and Qdrant's sparse vectors use).
* Parquet: an ``id`` column and two list columns, ``indices`` (``list<int32>``) and ``values``
  (``list<float32>``); the schema metadata records the model under ``sentemb`` as for dense vectors,
  with ``"kind": "sparse"`` and ``dim``, the vocabulary size (a JSON lines file cannot say it: its
  reader is given it, or takes the largest id + 1).
* A ``sentemb batch`` output folder: its ``_manifest.json`` names the columns; its shards are Parquet
  files of the layout above.

Writers take chunks (ids, :class:`~sentemb.sparse_vectors.SparseEmbeddings`) so a corpus larger than
memory streams through them; :func:`read_sparse` reads any of the three back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from sentemb.errors import VectorsError
from sentemb.sparse_vectors import SparseEmbeddings

META_KEY = "sentemb"
BATCH_MANIFEST = "_manifest.json"
INDICES, VALUES = "indices", "values"


@dataclass(frozen=True)
class SparseFile:
    """What a sparse vector file holds: ids, the vectors, and the model facts when the file records them."""

    ids: list[Any]
    embeddings: SparseEmbeddings
    model: dict[str, Any] = field(default_factory=dict)


def sparse_arrays(embeddings: SparseEmbeddings) -> tuple[Any, Any]:
    """The ``indices`` and ``values`` columns (Arrow ``list<int32>``, ``list<float32>``) of ``embeddings``."""
    import pyarrow as pa

    if embeddings.indptr[-1] >= 2**31:
        raise VectorsError("too many weights for one chunk of a Parquet file; write fewer rows at a time")
    offsets = pa.array(embeddings.indptr.astype(np.int32), type=pa.int32())
    indices = pa.ListArray.from_arrays(offsets, pa.array(embeddings.indices, type=pa.int32()))
    values = pa.ListArray.from_arrays(offsets, pa.array(embeddings.values, type=pa.float32()))
    return indices, values


class SparseJsonlWriter:
    """One ``{"id", "indices", "values"}`` object per line."""

    def __init__(self, handle: IO[str], owned: bool = False) -> None:
        self._handle = handle
        self._owned = owned

    def write(self, ids: Sequence[Any], embeddings: SparseEmbeddings) -> None:
        lines = [
            json.dumps({"id": record_id, INDICES: vec.indices.tolist(), VALUES: vec.values.tolist()}, default=str)
            for record_id, vec in zip(ids, embeddings, strict=True)
        ]
        self._handle.write("\n".join(lines) + "\n")

    def close(self) -> None:
        if self._owned:
            self._handle.close()
        else:
            self._handle.flush()

    def discard(self) -> None:
        if self._owned:
            self._handle.close()


class SparseParquetWriter:
    """``id``, ``indices`` and ``values`` columns, one row group per chunk, ``metadata`` in the schema."""

    def __init__(self, path: Path, metadata: dict[str, str] | None = None) -> None:
        self.path = path
        self.metadata = metadata or {}
        self._writer: Any = None

    def write(self, ids: Sequence[Any], embeddings: SparseEmbeddings) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        indices, values = sparse_arrays(embeddings)
        if self._writer is None:
            id_type = pa.array(list(ids)).type
            fields = [("id", id_type), (INDICES, indices.type), (VALUES, values.type)]
            self._writer = pq.ParquetWriter(self.path, pa.schema(fields, metadata=self.metadata))
        id_type = self._writer.schema.field("id").type
        try:
            id_array = pa.array(list(ids), type=id_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            raise VectorsError(f"ids change type within the input (first ones were {id_type}); make them one type"
                               ) from None  # fmt: skip
        self._writer.write_table(pa.Table.from_arrays([id_array, indices, values], schema=self._writer.schema))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def discard(self) -> None:
        self.close()


def parquet_facts(facts: dict[str, Any]) -> dict[str, str]:
    """Schema metadata recording the model ``facts`` of sparse vectors (``kind`` and ``dim`` among them)."""
    return {META_KEY: json.dumps({**facts, "kind": "sparse"}, sort_keys=True, default=str)}


def read_sparse(path: str | Path, *, dim: int | None = None, id_column: str = "id") -> SparseFile:
    """Sparse vectors from a .jsonl or .parquet file or a ``sentemb batch`` folder of sparse shards.

    ``dim`` (the model's vocabulary size) is needed for JSON lines, which do not record it; without it
    the largest id + 1 is taken. A file that records its own dim and disagrees with ``dim`` is refused."""
    where = Path(path)
    if where.is_dir():
        return _read_folder(where, dim)
    if not where.is_file():
        raise VectorsError(f"{where}: no such file or folder")
    suffix = where.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(where, dim, id_column)
    if suffix in (".parquet", ".pq"):
        return _read_parquet([where], dim, id_column, INDICES, VALUES)
    raise VectorsError(f"{where}: sparse vectors must be a .jsonl or .parquet file or a `sentemb batch` folder")


def _read_jsonl(path: Path, dim: int | None, id_column: str) -> SparseFile:
    ids: list[Any] = []
    rows: list[tuple[list[int], list[float]]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                rows.append((record[INDICES], record[VALUES]))
            except (ValueError, KeyError, TypeError):
                raise VectorsError(f"{path}: line {number} is not an object with 'indices' and 'values'") from None
            ids.append(record.get(id_column, len(ids)))
    if not rows:
        raise VectorsError(f"{path}: no sparse vectors in the file")
    width = dim if dim is not None else 1 + max((max(r[0]) for r in rows if len(r[0])), default=0)
    return SparseFile(ids, _from_rows(path, rows, width))


def _from_rows(path: Path, rows: Sequence[tuple[Sequence[int], Sequence[float]]], dim: int) -> SparseEmbeddings:
    try:
        return SparseEmbeddings.from_rows(rows, dim)
    except (VectorsError, ValueError, TypeError) as exc:
        raise VectorsError(f"{path}: {exc}") from None


def _read_parquet(paths: list[Path], dim: int | None, id_column: str, indices: str, values: str) -> SparseFile:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids: list[Any] = []
    parts: list[SparseEmbeddings] = []
    facts: dict[str, Any] = {}
    for path in paths:
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise VectorsError(f"{path}: not a readable Parquet file ({exc})") from None
        missing = [name for name in (indices, values) if name not in table.column_names]
        if missing:
            raise VectorsError(f"{path}: no {' or '.join(map(repr, missing))} column: not a sparse vector file "
                               f"(columns: {', '.join(table.column_names)})")  # fmt: skip
        facts = facts or _facts(table.schema.metadata)
        width = _width(path, dim, facts)
        rows = list(zip(table.column(indices).to_pylist(), table.column(values).to_pylist(), strict=True))
        parts.append(_from_rows(path, rows, width or 1 + max((max(r[0]) for r in rows if r[0]), default=0)))
        ids += table.column(id_column).to_pylist() if id_column in table.column_names else list(
            range(len(ids), len(ids) + len(rows)))  # fmt: skip
    if not ids:
        raise VectorsError(f"{paths[0] if paths else 'the folder'}: no sparse vectors in the file")
    widest = max(part.dim for part in parts)
    parts = [SparseEmbeddings(p.indptr, p.indices, p.values, widest) for p in parts]
    return SparseFile(ids, SparseEmbeddings.concat(parts), facts)


def _facts(metadata: dict[bytes, bytes] | None) -> dict[str, Any]:
    raw = (metadata or {}).get(META_KEY.encode())
    try:
        facts = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return facts if isinstance(facts, dict) else {}


def _width(path: Path, dim: int | None, facts: dict[str, Any]) -> int | None:
    recorded = facts.get("dim")
    if dim is not None and isinstance(recorded, int) and recorded != dim:
        raise VectorsError(f"{path}: its vectors are over a vocabulary of {recorded} ids, not {dim}; use the model "
                           "that wrote them")  # fmt: skip
    return dim if dim is not None else recorded if isinstance(recorded, int) else None


def _read_folder(folder: Path, dim: int | None) -> SparseFile:
    manifest = folder / BATCH_MANIFEST
    if not manifest.is_file():
        raise VectorsError(f"{folder}: a folder of sparse vectors must be a `sentemb batch` output ({BATCH_MANIFEST})")
    header = json.loads(manifest.read_text(encoding="utf-8")).get("header", {})
    if header.get("kind") != "sparse":
        raise VectorsError(f"{folder}: holds dense vectors, not sparse ones (made without --sparse-model)")
    shards = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not shards:
        raise VectorsError(f"{folder}: no committed shards yet")
    found = _read_parquet(shards, dim if dim is not None else header.get("dim"), header.get("id_column", "id"),
                          header.get("indices_column", INDICES), header.get("values_column", VALUES))  # fmt: skip
    return SparseFile(found.ids, found.embeddings, header)
