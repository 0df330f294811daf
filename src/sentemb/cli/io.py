"""Reading texts for the CLI: .txt/stdin, .jsonl, .csv/.tsv and .parquet, streamed in chunks with ids.

Nothing here holds a whole file: text formats are read line by line from a binary handle (so a bad
UTF-8 line can be named), parquet in record batches. The id of a record is ``--id-field``'s value, or
its position in the input counting from 0 (skipped records keep their number, so ids stay true).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sentemb.cli.common import InputError
from sentemb.cli.texts import bad_unicode, check_encoding, check_inline

INPUT_FORMATS = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
                 ".parquet": "parquet", ".pq": "parquet"}
ERROR_POLICIES = ("strict", "replace", "skip")


@dataclass(frozen=True)
class Source:
    """Where texts come from and how to read them."""

    path: str  # "-" is stdin
    fmt: str  # txt, jsonl, csv, tsv or parquet
    field: str = "text"  # jsonl field, csv/tsv/parquet column
    id_field: str | None = None
    errors: str = "strict"  # strict, replace (bad bytes, text formats) or skip (the record)

    @property
    def label(self) -> str:
        return "<stdin>" if self.path == "-" else self.path

    @property
    def size(self) -> int | None:
        """Progress units in the whole input: bytes for text formats, rows for parquet; None for stdin."""
        if self.path == "-":
            return None
        if self.fmt == "parquet":
            return int(open_parquet(self).metadata.num_rows)
        return os.path.getsize(self.path)


@dataclass
class Block:
    """A run of records: their ids and texts, and how far into the input they reach."""

    ids: list[Any]
    texts: list[str]
    done: int  # progress units consumed so far
    skipped: int = 0  # records skipped so far (--errors skip)
    skipped_ids: list[Any] = field(default_factory=list)  # ids of the records skipped in this chunk


@dataclass
class _Counter:
    done: int = 0
    skipped: int = 0
    lines: int = 0


def make_source(
    path: str, *, input_format: str | None, field: str, id_field: str | None, errors: str,
    format_option: bool = False,
) -> Source:
    """Check the input exists and pick its format from the extension (stdin: txt unless told).

    ``format_option``: the command has ``--input-format`` (only then does the message suggest it).
    """
    if input_format:
        fmt = input_format
    elif path == "-":
        fmt = "txt"
    else:
        suffix = Path(path).suffix.lower()
        if suffix and suffix not in INPUT_FORMATS:
            raise InputError(_unknown_format(path, suffix, format_option))
        fmt = INPUT_FORMATS.get(suffix, "txt")
    if path != "-":
        if not os.path.exists(path):
            raise InputError(f"{path}: no such file")
        if os.path.isdir(path):
            raise InputError(f"{path}: is a folder, not a file")
    elif fmt == "parquet":
        raise InputError("parquet cannot be read from stdin; give the file's path")
    return Source(path, fmt, field, id_field, errors)


def _unknown_format(path: str, suffix: str, format_option: bool) -> str:
    known = ", ".join(sorted(INPUT_FORMATS))
    fix = f"rename it to one of {known}" + (", or pass --input-format" if format_option else "")
    if suffix == ".json":
        fix = "write one JSON object per line and name it .jsonl" + (" (or pass --input-format jsonl)" if
                                                                     format_option else "")
    return f"{path}: cannot tell the format from {suffix!r}; {fix}"


def read_blocks(source: Source, size: int = 2048) -> Iterator[Block]:
    """The input's records in chunks of ``size``; raises InputError naming the first bad line or row."""
    if source.fmt == "parquet":
        yield from _parquet_blocks(source, size)
        return
    counter = _Counter()
    try:
        handle: IO[bytes] = sys.stdin.buffer if source.path == "-" else open(source.path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"{source.label}: cannot read ({exc.strerror or exc})") from None
    try:
        check_encoding(handle, source.label)
        lines = _decoded_lines(handle, source, counter)
        if source.fmt == "txt":
            records: Iterable[tuple[Any, str | None]] = _txt_records(lines)
        elif source.fmt == "jsonl":
            records = _jsonl_records(lines, source, counter)
        else:
            records = _csv_records(lines, source, counter)
        yield from _blocks(records, size, counter)
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


def inline_block(texts: list[str], errors: str = "strict") -> Iterator[Block]:
    """Texts given with --text, as one chunk (ids 0, 1, ...; a skipped text keeps its number)."""
    kept = check_inline(texts, "--text", errors)
    ids = [i for i, _ in kept]
    skipped = sorted(set(range(len(texts))) - set(ids))
    yield Block(ids, [t for _, t in kept], len(texts), len(skipped), skipped)


def read_all(source: Source) -> tuple[list[Any], list[str]]:
    """Every record of a (small) input: for similarity and search queries."""
    ids: list[Any] = []
    texts: list[str] = []
    for chunk in read_blocks(source):
        ids += chunk.ids
        texts += chunk.texts
    if not texts:
        raise InputError(f"{source.label}: no texts in the input")
    return ids, texts


def texts_from(path: str | None, inline: Iterable[str], *, field: str, errors: str, what: str = "TEXT") -> list[str]:
    """The texts of a (small) file when ``path`` is given, else the texts given on the command line."""
    return records_from(path, inline, field=field, errors=errors, what=what)[1]


def records_from(
    path: str | None, inline: Iterable[str], *, field: str, errors: str, what: str = "TEXT"
) -> tuple[list[Any], list[str]]:
    """(ids, texts) of a (small) file or of the command line's texts; a skipped record keeps its id out."""
    if path is None:
        kept = check_inline(inline, what, errors)
        return [i for i, _ in kept], [text for _, text in kept]
    return read_all(make_source(path, input_format=None, field=field, id_field=None, errors=errors))


def _blocks(records: Iterable[tuple[Any, str | None]], size: int, counter: _Counter) -> Iterator[Block]:
    ids: list[Any] = []
    texts: list[str] = []
    skipped: list[Any] = []
    for record_id, text in records:
        if text is None:  # skipped under --errors skip
            counter.skipped += 1
            skipped.append(record_id)
            continue
        ids.append(record_id)
        texts.append(text)
        if len(texts) >= size:
            yield Block(ids, texts, counter.done, counter.skipped, skipped)
            ids, texts, skipped = [], [], []
    if texts or skipped:
        yield Block(ids, texts, counter.done, counter.skipped, skipped)


def _lines(handle: IO[bytes], label: str) -> Iterator[bytes]:
    """The raw lines of ``handle``; a read failure (a bad disk, a vanished mount) is an input error."""
    try:
        yield from handle
    except OSError as exc:
        raise InputError(f"{label}: cannot read ({exc.strerror or exc})") from None


def _decoded_lines(handle: IO[bytes], source: Source, counter: _Counter) -> Iterator[tuple[int, str | None]]:
    """(1-based line number, text with its newline, or None for a skipped undecodable line)."""
    for number, raw in enumerate(_lines(handle, source.label), start=1):
        counter.done += len(raw)
        counter.lines = number
        text: str | None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if source.errors == "strict":
                raise InputError(
                    f"{source.label}: line {number} is not valid UTF-8 (byte {exc.start + 1} of the line); "
                    "use --errors replace or --errors skip to go on"
                ) from None
            text = None if source.errors == "skip" else raw.decode("utf-8", "replace")
        if number == 1 and text is not None:
            text = text.removeprefix("\ufeff")
        yield number, text


def _txt_records(lines: Iterable[tuple[int, str | None]]) -> Iterator[tuple[Any, str | None]]:
    for number, text in lines:
        yield number - 1, (None if text is None else text.rstrip("\r\n"))


def _bad_value(source: Source, where: str, value: object) -> str | None:
    """The message for a missing, null or non-text value, or None (skip) under --errors skip."""
    if source.errors == "skip":
        return None
    kind = "null" if value is None else f"{type(value).__name__} ({value!r:.40}), not text"
    return f"{source.label}: {where}: {source.field!r} is {kind}; fix the input or use --errors skip"


def _jsonl_records(
    lines: Iterable[tuple[int, str | None]], source: Source, counter: _Counter
) -> Iterator[tuple[Any, str | None]]:
    index = 0
    for number, line in lines:
        if line is None:
            yield index, None
            index += 1
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if source.errors == "skip":
                yield index, None
                index += 1
                continue
            raise InputError(f"{source.label}: line {number} is not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{source.label}: line {number} is a JSON {type(record).__name__}, not an object")
        if source.field not in record:
            fields = ", ".join(map(repr, list(record)[:10]))
            raise InputError(
                f"{source.label}: line {number} has no field {source.field!r} (it has {fields}); "
                "choose one with --field"
            )
        text = record[source.field]
        record_id: Any = index
        if source.id_field is not None:
            if source.id_field not in record:
                raise InputError(f"{source.label}: line {number} has no id field {source.id_field!r}")
            record_id = record[source.id_field]
        if not isinstance(text, str):
            message = _bad_value(source, f"line {number}", text)
            if message:
                raise InputError(message)
            text = None
        else:
            text = bad_unicode(text, f"line {number}", source.label, source.errors)
        yield record_id, text
        index += 1


def _csv_records(
    lines: Iterable[tuple[int, str | None]], source: Source, counter: _Counter
) -> Iterator[tuple[Any, str | None]]:
    csv.field_size_limit(2**31 - 1)
    texts = (line for _, line in lines if line is not None)  # an undecodable line is dropped under skip
    reader = csv.reader(texts, delimiter="\t" if source.fmt == "tsv" else ",")
    header = next(reader, None)
    if header is None:
        return
    if source.field not in header:
        raise InputError(
            f"{source.label}: no column {source.field!r} (columns: {', '.join(header[:20])}); choose one with --column"
        )
    column = header.index(source.field)
    id_column = None
    if source.id_field is not None:
        if source.id_field not in header:
            raise InputError(f"{source.label}: no id column {source.id_field!r} (columns: {', '.join(header[:20])})")
        id_column = header.index(source.id_field)
    for index, row in enumerate(reader):
        if not row:  # a blank line
            continue
        if len(row) <= max(column, id_column or 0):
            if source.errors == "skip":
                yield index, None
                continue
            raise InputError(
                f"{source.label}: line {reader.line_num} has {len(row)} fields, the header has {len(header)}"
            )
        yield (index if id_column is None else row[id_column]), row[column]


def _parquet_blocks(source: Source, size: int) -> Iterator[Block]:
    import pyarrow as pa

    parquet = open_parquet(source)
    names = parquet.schema_arrow.names
    for name, what in ((source.field, "column"), (source.id_field, "id column")):
        if name is not None and name not in names:
            raise InputError(f"{source.label}: no {what} {name!r} (columns: {', '.join(names[:20])}); use --column")
    kind = parquet.schema_arrow.field(source.field).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise InputError(f"{source.label}: column {source.field!r} holds {kind}, not text")
    columns = [source.field] + ([source.id_field] if source.id_field and source.id_field != source.field else [])
    start = skipped = 0
    for batch in _parquet_batches(parquet, source, size, columns):
        texts = batch.column(source.field).to_pylist()
        ids = batch.column(source.id_field).to_pylist() if source.id_field else list(range(start, start + len(texts)))
        keep = [i for i, text in enumerate(texts) if text is not None]
        dropped = []
        if len(keep) < len(texts):
            first = next(i for i, text in enumerate(texts) if text is None)
            message = _bad_value(source, f"row {start + first}", None)
            if message:
                raise InputError(message)
            skipped += len(texts) - len(keep)
            dropped = [ids[i] for i, text in enumerate(texts) if text is None]
            texts, ids = [texts[i] for i in keep], [ids[i] for i in keep]
        start += batch.num_rows
        if texts or dropped:
            yield Block(ids, texts, start, skipped, dropped)


def open_parquet(source: Source) -> Any:
    """The ``pyarrow.parquet.ParquetFile`` of ``source``; an empty, truncated or foreign file is an input error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(source.path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{source.label}: not a readable parquet file ({exc})") from None


def _parquet_batches(parquet: Any, source: Source, size: int, columns: list[str]) -> Iterator[Any]:
    """Record batches; damaged data pages (an intact footer over corrupt data) are an input error."""
    import pyarrow as pa

    batches = parquet.iter_batches(batch_size=size, columns=columns)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{source.label}: damaged parquet data ({exc})") from None
        if batch is None:
            return
        yield batch
