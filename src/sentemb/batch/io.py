"""Read one input shard, separate the bad rows, and write files atomically (temporary name, then move).

Temporary files start with '.tmp-' so Parquet readers (which skip names starting with '.' or '_') never
see them; a rerun deletes any a killed run left behind.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sentemb.batch.shards import Shard
from sentemb.tokenize import lone_surrogate

TMP_PREFIX = ".tmp-"
META_KEY = b"sentemb.batch"


@dataclass(frozen=True)
class BadRow:
    """An input row that was not embedded: its id (None if unknown), where it is, and why."""

    id: object
    source: str
    row: int | None  # row number in a Parquet file, byte offset of the line in a JSONL file
    error: str
    unit: str = "row"  # or "byte_offset"

    def to_json(self) -> str:
        ident = self.id if isinstance(self.id, (str, int, float, bool, type(None))) else str(self.id)
        return json.dumps({"id": ident, "source": self.source, self.unit: self.row, "error": self.error})


@dataclass(frozen=True)
class ShardRows:
    """The good rows of a shard (ids, texts, carried columns) and its bad rows."""

    ids: pa.Array
    texts: list[str]
    carry: pa.Table
    bad: list[BadRow]


def read_shard(fs: pafs.FileSystem, shard: Shard, id_column: str, text_column: str, carry: list[str]) -> ShardRows:
    if shard.format == "parquet":
        table = _read_parquet_rows(fs, shard, [id_column, text_column, *carry])
        return _split_table(table, shard, id_column, text_column, carry)
    return _read_jsonl(fs, shard, id_column, text_column, carry)


def _read_parquet_rows(fs: pafs.FileSystem, shard: Shard, columns: list[str]) -> pa.Table:
    with fs.open_input_file(shard.path) as handle:
        parquet = pq.ParquetFile(handle)
        meta = parquet.metadata
        groups, first, offset = [], None, 0
        for i in range(meta.num_row_groups):
            rows = meta.row_group(i).num_rows
            if offset < shard.stop and offset + rows > shard.start:
                groups.append(i)
                first = offset if first is None else first
            offset += rows
        table = parquet.read_row_groups(groups, columns=list(dict.fromkeys(columns)))
    return table.slice(shard.start - (first or 0), shard.stop - shard.start)


def _split_table(table: pa.Table, shard: Shard, id_column: str, text_column: str, carry: list[str]) -> ShardRows:
    ids, text = table.column(id_column), table.column(text_column)
    reasons = np.full(len(table), None, dtype=object)
    if pa.types.is_string(text.type) or pa.types.is_large_string(text.type):
        reasons[np.asarray(pc.is_null(text).to_numpy(zero_copy_only=False), dtype=bool)] = "text is null"
    else:
        reasons[:] = f"text is {text.type}, not a string"
        reasons[np.asarray(pc.is_null(text).to_numpy(zero_copy_only=False), dtype=bool)] = "text is null"
    reasons[np.asarray(pc.is_null(ids).to_numpy(zero_copy_only=False), dtype=bool)] = "id is null"
    bad_at = np.flatnonzero(reasons != None)  # noqa: E711 - elementwise comparison on an object array
    bad = [BadRow(ids[int(i)].as_py(), shard.path, shard.start + int(i), str(reasons[i])) for i in bad_at]
    keep = pa.array(reasons == None)  # noqa: E711
    good = table.filter(keep) if len(bad_at) else table
    texts = good.column(text_column).to_pylist() if len(good) else []
    return ShardRows(good.column(id_column).combine_chunks(), texts, good.select(carry), bad)


def _jsonl_lines(fs: pafs.FileSystem, shard: Shard) -> list[tuple[int, bytes]]:
    """(byte offset, line) for each line whose first byte lies in [start, stop)."""
    pos = max(shard.start - 1, 0)
    with fs.open_input_file(shard.path) as handle:
        handle.seek(pos)
        data = handle.read(shard.stop - pos)
        while data and not data.endswith(b"\n"):
            more = handle.read(1 << 16)
            if not more:
                break
            cut = more.find(b"\n")
            data += more if cut < 0 else more[: cut + 1]
            if cut >= 0:
                break
    begin = 0
    if shard.start > 0:  # the byte before start tells whether the first line starts inside the range
        newline = data.find(b"\n")
        if newline < 0:
            return []
        begin = newline + 1
    lines, offset = [], pos + begin
    for line in data[begin:].split(b"\n"):
        if offset >= shard.stop:
            break
        if line.strip():
            lines.append((offset, line))
        offset += len(line) + 1
    return lines


def _not_unicode(text: str) -> str | None:
    """Why ``text`` cannot reach the tokenizer (a lone surrogate), or None."""
    position = lone_surrogate(text)
    if position is None:
        return None
    return f"text is not valid Unicode: character {position} is a lone surrogate (U+{ord(text[position]):04X})"


def _read_jsonl(fs: pafs.FileSystem, shard: Shard, id_column: str, text_column: str, carry: list[str]) -> ShardRows:
    ids: list[object] = []
    texts: list[str] = []
    carried: dict[str, list[object]] = {c: [] for c in carry}
    bad: list[BadRow] = []
    for offset, line in _jsonl_lines(fs, shard):
        try:
            record = json.loads(line)
        except ValueError as exc:
            bad.append(BadRow(None, shard.path, offset, f"invalid JSON: {exc}", "byte_offset"))
            continue
        if not isinstance(record, dict):
            reason = f"line is a JSON {type(record).__name__}, not an object"
            bad.append(BadRow(None, shard.path, offset, reason, "byte_offset"))
            continue
        ident, text = record.get(id_column), record.get(text_column)
        if ident is None:
            bad.append(BadRow(None, shard.path, offset, "id is null or missing", "byte_offset"))
        elif text is None:
            bad.append(BadRow(ident, shard.path, offset, "text is null or missing", "byte_offset"))
        elif not isinstance(text, str):
            reason = f"text is {type(text).__name__}, not a string"
            bad.append(BadRow(ident, shard.path, offset, reason, "byte_offset"))
        elif (invalid := _not_unicode(text)) is not None:  # a JSON "\ud800" escape: no UTF-8 form
            bad.append(BadRow(ident, shard.path, offset, invalid, "byte_offset"))
        else:
            ids.append(ident)
            texts.append(text)
            for column in carry:
                carried[column].append(record.get(column))
    carry_table = pa.table({c: _array(v) for c, v in carried.items()}) if carry else pa.table({})
    return ShardRows(_array(ids), texts, carry_table, bad)


def _array(values: list[object]) -> pa.Array:
    """An Arrow array of JSON values; mixed types (ints and strings) become strings."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values])


def output_table(rows: ShardRows, vectors: np.ndarray, id_column: str, embedding_column: str) -> pa.Table:
    """id, embedding as fixed_size_list<float32>[dim], then the carried columns."""
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    columns = {id_column: rows.ids, embedding_column: pa.FixedSizeListArray.from_arrays(flat, dim)}
    for name in rows.carry.column_names:
        columns[name] = rows.carry.column(name).combine_chunks() if len(rows.carry) else pa.array([], pa.null())
    return pa.table(columns)


def join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def commit_bytes(fs: pafs.FileSystem, folder: str, name: str, data: bytes) -> None:
    """Write ``data`` to folder/name atomically: a temporary name in the same folder, then a move."""
    tmp = join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex}-{name}")
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, join(folder, name))


def commit_parquet(fs: pafs.FileSystem, folder: str, name: str, table: pa.Table, meta: dict[str, object]) -> None:
    """Write a Parquet file atomically, with ``meta`` in its footer (read back to adopt orphans)."""
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[META_KEY] = json.dumps(meta, sort_keys=True).encode()
    table = table.replace_schema_metadata(schema_meta)
    tmp = join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex}-{name}")
    with fs.open_output_stream(tmp) as out:
        pq.write_table(table, out)
    fs.move(tmp, join(folder, name))


def footer_meta(fs: pafs.FileSystem, path: str) -> tuple[dict[str, object] | None, int]:
    """The job facts stored in a committed shard's footer (None if absent) and its row count."""
    with fs.open_input_file(path) as handle:
        meta = pq.ParquetFile(handle).metadata
    raw = (meta.metadata or {}).get(META_KEY)
    return (json.loads(raw) if raw else None), meta.num_rows
