"""Vector files in and out: ``.npy``, Parquet as ``sentemb encode`` writes it, and ``sentemb batch`` folders.

Parquet holds an ``id`` column and an ``embedding`` column of ``fixed_size_list<float32|int8|uint8>``;
quantised files record their output type and int8/uint8 ranges in the schema metadata under
``sentemb.quantize`` (JSON: ``{"output": ..., "dim": ..., "ranges": [[min...], [max...]]}``), so a
reader can rescore or quantise queries the same way. JSON lines hold ``{"id": ..., "embedding": [...]}``
per line; a quantised file starts with one ``{"sentemb.quantize": {...}}`` line of the same facts
(:func:`jsonl_header`), since an integer list alone cannot say how to read it. A batch output folder is read through its
``_manifest.json`` (column names, model facts) and its committed ``*.parquet`` shards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentemb.errors import VectorsError
from sentemb.files import atomic_file
from sentemb.retrieval.quantize import NUMPY_DTYPES, check_output_type

QUANTIZE_META_KEY = b"sentemb.quantize"
BATCH_MANIFEST = "_manifest.json"


@dataclass(frozen=True)
class VectorFile:
    """What a vector file holds: ids, the stored vectors (float32 or codes), their output type, ranges."""

    ids: list[Any]
    vectors: np.ndarray
    output: str = "float32"
    dim: int = 0  # the float dimension (differs from vectors.shape[1] for packed bits)
    ranges: np.ndarray | None = None
    model: dict[str, Any] = field(default_factory=dict)  # model facts when the file records them


def read_vectors(path: str | os.PathLike[str], *, id_column: str = "id", column: str = "embedding") -> VectorFile:
    """Read vectors from a .npy file, a Parquet file or a ``sentemb batch`` output folder."""
    where = Path(path)
    if where.is_dir():
        return _read_batch_folder(where)
    if not where.is_file():
        raise VectorsError(f"{where}: no such file or folder")
    suffix = where.suffix.lower()
    if suffix == ".npy":
        return _read_npy(where)
    if suffix in (".parquet", ".pq"):
        return _read_parquet([where], id_column, column)
    if suffix == ".jsonl":
        return _read_jsonl(where, id_column, column)
    raise VectorsError(f"{where}: vectors must be a .npy, .parquet or .jsonl file or a `sentemb batch` output folder")


def _read_npy(path: Path) -> VectorFile:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise VectorsError(f"{path}: not a readable .npy file ({exc})") from None
    if array.ndim != 2:
        raise VectorsError(f"{path}: expected a 2-D array of vectors, got shape {array.shape}")
    if array.dtype.kind != "f":
        raise VectorsError(f"{path}: holds {array.dtype}; a .npy input must be float vectors (quantised: Parquet)")
    vectors = np.asarray(array, dtype=np.float32)
    return VectorFile(list(range(len(vectors))), vectors, "float32", vectors.shape[1])


def _read_jsonl(path: Path, id_column: str, column: str) -> VectorFile:
    """JSON lines as ``sentemb encode`` writes them; a quantised file's first line holds its facts."""
    ids: list[Any] = []
    rows: list[Any] = []
    meta: dict[str, Any] = {"output": "float32"}
    key = QUANTIZE_META_KEY.decode()
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if number == 1 and isinstance(record, dict) and key in record:
                    meta = record[key]
                    continue
                if not isinstance(record, dict) or not isinstance(record.get(column), list):
                    raise VectorsError(f"{path}:{number}: expected an object with a {column!r} list")
                ids.append(record.get(id_column, len(ids)))
                rows.append(record[column])
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VectorsError(f"{path}: not readable JSON lines of vectors ({exc})") from None
    if not rows:
        raise VectorsError(f"{path}: holds no vectors")
    output = _recorded_output(path, meta)
    try:
        vectors = np.asarray(rows, dtype=NUMPY_DTYPES.get(output, np.float32))
    except (ValueError, OverflowError) as exc:
        raise VectorsError(f"{path}: rows differ in length or hold non-numbers ({exc})") from None
    return _vector_file(ids, vectors, output, meta)


def _read_batch_folder(folder: Path) -> VectorFile:
    manifest = folder / BATCH_MANIFEST
    if not manifest.is_file():
        raise VectorsError(f"{folder}: a folder must be a `sentemb batch` output (no {BATCH_MANIFEST} in it)")
    header = json.loads(manifest.read_text()).get("header", {})
    shards = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not shards:
        raise VectorsError(f"{folder}: the batch output holds no shards yet; run `sentemb batch` to the end first")
    read = _read_parquet(shards, str(header.get("id_column", "id")), str(header.get("embedding_column", "embedding")))
    recorded = ("model", "sha256", "dim", "pooling", "normalize", "max_length")
    model = {key: header[key] for key in recorded if key in header}
    return VectorFile(read.ids, read.vectors, read.output, read.dim, read.ranges, model)


def _read_parquet(paths: list[Path], id_column: str, column: str) -> VectorFile:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids: list[Any] = []
    parts: list[np.ndarray] = []
    meta: dict[str, Any] = {}
    for path in paths:
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise VectorsError(f"{path}: not a readable Parquet file ({exc})") from None
        if column not in table.column_names:
            raise VectorsError(f"{path}: no {column!r} column (columns: {', '.join(table.column_names[:20])})")
        raw = (table.schema.metadata or {}).get(QUANTIZE_META_KEY)
        previous, meta = meta, json.loads(raw) if raw else {"output": "float32"}
        if previous and [previous.get(k) for k in ("output", "ranges")] != [meta.get(k) for k in ("output", "ranges")]:
            raise VectorsError(
                f"{path}: its output type or int8 ranges differ from the other files'; "
                "quantise every file with the same ranges"
            )
        parts.append(_embedding_array(path, table.column(column).combine_chunks(), meta["output"]))
        start = len(ids)
        has_ids = id_column in table.column_names
        ids += table.column(id_column).to_pylist() if has_ids else list(range(start, start + len(table)))
    vectors = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return _vector_file(ids, vectors, _recorded_output(paths[-1], meta), meta)


def _vector_file(ids: list[Any], vectors: np.ndarray, output: str, meta: dict[str, Any]) -> VectorFile:
    """The file's vectors with the dim and int8/uint8 ranges its ``sentemb.quantize`` facts record."""
    ranges = np.asarray(meta["ranges"], dtype=np.float32) if meta.get("ranges") is not None else None
    return VectorFile(ids, vectors, output, int(meta.get("dim") or vectors.shape[1]), ranges)


def _recorded_output(path: Path, meta: dict[str, Any]) -> str:
    output = str(meta.get("output", "float32"))
    if output not in NUMPY_DTYPES:
        raise VectorsError(f"{path}: records output type {output!r}, which this sentemb cannot read; "
                           f"expected one of {', '.join(NUMPY_DTYPES)}")  # fmt: skip
    return output


def _embedding_array(path: Path, column: Any, output: str) -> np.ndarray:
    dim = getattr(column.type, "list_size", None)
    dtype = NUMPY_DTYPES.get(output, np.float32)
    if dim is None:
        return np.array(column.to_pylist(), dtype=dtype).reshape(len(column), -1)
    return column.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(-1, dim)


def quantize_facts(
    output: str, dim: int, ranges: np.ndarray | None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The output type, float dimension and int8/uint8 ranges as JSON-able facts; ``extra`` (JSON-able) is
    recorded beside them, e.g. where the ranges came from."""
    return {**(extra or {}), "output": check_output_type(output), "dim": int(dim),
            "ranges": None if ranges is None else np.asarray(ranges, dtype=np.float32).tolist()}  # fmt: skip


def quantize_metadata(
    output: str, dim: int, ranges: np.ndarray | None, extra: dict[str, Any] | None = None
) -> dict[bytes, bytes]:
    """The Parquet schema metadata that records :func:`quantize_facts` under ``sentemb.quantize``."""
    return {QUANTIZE_META_KEY: json.dumps(quantize_facts(output, dim, ranges, extra)).encode()}


def jsonl_header(facts: dict[str, Any]) -> str:
    """The first line of a quantised .jsonl vector file: ``{"sentemb.quantize": facts}`` (no id, no embedding)."""
    return json.dumps({QUANTIZE_META_KEY.decode(): facts})


class QuantizedParquetWriter:
    """Streams ``id`` + packed ``embedding`` chunks into one Parquet file (for ``sentemb encode --output-type``).

    Quantise every chunk with the same ``ranges`` (fix them before the first chunk: from a calibration
    sample or the first chunk) and pass them here so readers can rescore. The caller owns atomicity
    (write to a temporary path, then rename), as ``sentemb.cli.output.atomic_path`` does.
    """

    def __init__(
        self, path: str | os.PathLike[str], output: str, dim: int, ranges: np.ndarray | None = None,
        *, metadata: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self.path, self.output, self.dim = Path(path), check_output_type(output), dim
        self._meta = {**{k.encode(): v.encode() for k, v in (metadata or {}).items()},
                      **quantize_metadata(output, dim, ranges, extra)}  # fmt: skip
        self._writer: Any = None

    def write(self, ids: Sequence[Any], codes: np.ndarray) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        array = np.ascontiguousarray(codes, dtype=NUMPY_DTYPES[self.output])
        if array.ndim != 2 or len(array) != len(ids):
            raise VectorsError(f"{len(ids)} ids but vectors of shape {array.shape}; give one 2-D row per id")
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), array.shape[1])
        table = pa.table({"id": pa.array(list(ids)), "embedding": embedding}).replace_schema_metadata(self._meta)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table.cast(self._writer.schema))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def discard(self) -> None:
        self.close()


def write_vectors_parquet(
    path: str | os.PathLike[str],
    ids: list[Any],
    vectors: np.ndarray,
    output: str = "float32",
    *,
    dim: int | None = None,
    ranges: np.ndarray | None = None,
) -> None:
    """Write ``id`` + ``embedding`` (``fixed_size_list<float32|int8|uint8>``) to ``path``, ranges in the metadata.

    ``vectors`` are what :func:`sentemb.quantize` returned for ``output``; ``dim`` is the float dimension
    (needed for packed bits). Writes a temporary file beside ``path`` and renames it (atomic).
    """
    with atomic_file(Path(path)) as temp:
        writer = QuantizedParquetWriter(temp, output, int(dim or np.shape(vectors)[1]), ranges)
        writer.write(ids, vectors)
        writer.close()
