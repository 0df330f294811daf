"""Writing vectors for the CLI: .npy, .jsonl and .parquet, in chunks, atomically.

Every writer fills a temporary file beside the target and renames it over the target only once
everything is written; a crash or Ctrl-C leaves no partial file under the requested name.
``-`` writes JSON lines to stdout (no rename there).

The temporary file (``.<name>.XXXX.part``) is locked (``flock``) while its process lives. Ctrl-C and
SIGTERM remove it on the way out; after a SIGKILL or a power cut the next run for the same output
removes every unlocked ``.part`` of that name (a lock held means another run is still writing it).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import struct
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import click
import numpy as np

from sentemb.cli.common import EXIT_USAGE, EXTRAS, CliError, OutputError
from sentemb.extras import installed
from sentemb.files import atomic_file

OUTPUT_FORMATS = {".npy": "npy", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
# What matplotlib's Agg canvas saves (its print_* methods; jpg, tif and webp through Pillow, a dependency of it).
FIGURE_FORMATS = ("png", "jpg", "jpeg", "tif", "tiff", "webp", "svg", "svgz", "pdf", "eps", "ps")
# Room reserved for the .npy header so the row count can be written last (a multiple of 64 bytes).
NPY_HEADER_BYTES = 128


class Writer(Protocol):
    """Receives vectors chunk by chunk; ``close`` finishes the file."""

    def write(self, ids: Sequence[Any], vectors: np.ndarray) -> None: ...

    def close(self) -> None: ...

    def discard(self) -> None:
        """Release the file after a failure (the temporary file is removed by atomic_path)."""


def output_format(path: str, override: str | None) -> str:
    if override:
        return override
    if path == "-":
        return "jsonl"
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise OutputError(f"{path}: cannot tell the output format from {suffix or 'no extension'!r}; use .npy, "
                          ".jsonl or .parquet, or --output-format")
    return OUTPUT_FORMATS[suffix]


def check_output(path: str, force: bool) -> None:
    """Fail early (before loading a model) if ``path`` exists without --force or its folder is unusable."""
    if path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name")
    if target.exists() and not force:
        raise OutputError(f"{path}: already exists; use --force to overwrite it")
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"{path}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: folder {str(folder)!r} is not writable")


def check_installed(module: str, needed_for: str) -> None:
    """Fail before any work (exit 2, naming the extra) when an optional dependency an output needs is missing."""
    if not installed(module):
        extra = EXTRAS.get(module.split(".", maxsplit=1)[0], "all")
        raise CliError(f"{needed_for} needs {module}, which is not installed: pip install 'sentemb[{extra}]'",
                       EXIT_USAGE)  # fmt: skip


def check_figure(path: str, force: bool, option: str) -> None:
    """Fail before any work if the figure ``option`` names cannot be written: it exists without --force, its
    folder is unusable, its extension is no format matplotlib writes, or matplotlib is not installed."""
    check_output(path, force)
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix and suffix not in FIGURE_FORMATS:
        raise OutputError(f"{path}: {option} cannot write .{suffix} files; use .png, .svg or .pdf")
    check_installed("matplotlib", option)


def _lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; False if another process holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no stale-file detection, nothing is removed
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def remove_stale_parts(target: Path) -> list[Path]:
    """Remove the ``.part`` files of ``target`` that no living process holds (a killed run's); returns them."""
    removed = []
    for part in target.parent.glob(f".{glob.escape(target.name)}.*.part"):
        try:
            fd = os.open(part, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _lock(fd):
                part.unlink(missing_ok=True)
                removed.append(part)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def atomic_path(path: str, force: bool) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed onto ``path`` when the block ends without an error."""
    check_output(path, force)
    target = Path(path)
    stale = remove_stale_parts(target)
    if stale:
        click.echo(f"note: removed {len(stale)} unfinished temporary file(s) of {path} left by a killed run", err=True)
    try:
        with atomic_file(target, hold=_lock) as temp:  # locked until done: the file is not stale meanwhile
            yield temp
            if target.exists() and not force:  # appeared while we were working
                raise OutputError(f"{path}: already exists; use --force to overwrite it")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write here ({exc.strerror or exc})") from None


def save_figure(figure: Any, path: str, force: bool) -> None:
    """Save a matplotlib figure atomically; the format comes from the extension (.png, .svg, .pdf)."""
    suffix = Path(path).suffix.lower().lstrip(".") or "png"
    with atomic_path(path, force) as temp:
        figure.savefig(temp, format=suffix, dpi=150, bbox_inches="tight")


def table_format(choice: str | None, piped: str) -> str:
    """The output style: as chosen, else a table on a terminal and ``piped`` otherwise."""
    return choice or ("table" if sys.stdout.isatty() else piped)


def print_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str, title: str | None = None) -> None:
    """Rows as a rich table, tab-separated values (header first) or JSON lines."""
    if fmt == "jsonl":
        for row in rows:
            click.echo(json.dumps(dict(zip(columns, row, strict=True)), ensure_ascii=False, default=str))
    elif fmt == "tsv":
        click.echo("\t".join(columns))
        for row in rows:
            click.echo("\t".join(_cell(value).replace("\t", " ").replace("\n", " ") for value in row))
    else:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(*columns, title=title)
        for row in rows:
            table.add_row(*(Text(_cell(value)) for value in row))
        Console().print(table)


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def open_writer(fmt: str, path: Path | None, dim: int, metadata: dict[str, str] | None = None) -> Writer:
    """A writer of ``fmt`` into ``path`` (None: JSON lines on stdout); ``metadata`` goes into a Parquet footer."""
    if path is None:
        return JsonlWriter(sys.stdout)
    if fmt == "npy":
        return NpyWriter(path, dim)
    if fmt == "parquet":
        return ParquetWriter(path, dim, metadata)
    return JsonlWriter(path.open("w", encoding="utf-8"), owned=True)


def npy_header(rows: int, dim: int, descr: str = "<f4") -> bytes:
    """A version 1.0 .npy header for a C-order (rows, dim) array of ``descr``, padded to NPY_HEADER_BYTES."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    size = NPY_HEADER_BYTES - 10  # magic (6) + version (2) + header length (2)
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", size) + (text.ljust(size - 1) + "\n").encode("latin1")


class NpyWriter:
    """Streams rows into a .npy file; the header gets the final row count on close."""

    def __init__(self, path: Path, dim: int, dtype: str = "<f4") -> None:
        self.dim = dim
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._handle = path.open("wb")
        self._handle.write(npy_header(0, dim, self.dtype.str))

    def write(self, ids: Sequence[Any], vectors: np.ndarray) -> None:
        self._handle.write(np.ascontiguousarray(vectors, dtype=self.dtype).tobytes())
        self.rows += len(vectors)

    def close(self) -> None:
        self._handle.seek(0)
        self._handle.write(npy_header(self.rows, self.dim, self.dtype.str))
        self._handle.close()

    def discard(self) -> None:
        self._handle.close()


class JsonlWriter:
    """One ``{"id": ..., "embedding": [...]}`` object per line."""

    def __init__(self, handle: IO[str], owned: bool = False) -> None:
        self._handle = handle
        self._owned = owned

    def write(self, ids: Sequence[Any], vectors: np.ndarray) -> None:
        lines = [
            json.dumps({"id": record_id, "embedding": vector}, default=str)
            for record_id, vector in zip(ids, vectors.tolist(), strict=True)
        ]
        self._handle.write("\n".join(lines) + "\n")

    def write_line(self, line: str) -> None:
        """One line of its own before the rows (a quantised file's header)."""
        self._handle.write(line + "\n")

    def close(self) -> None:
        if self._owned:
            self._handle.close()
        else:
            self._handle.flush()

    def discard(self) -> None:
        if self._owned:
            self._handle.close()


class ParquetWriter:
    """An ``id`` column and an ``embedding`` column of ``fixed_size_list<float32>[dim]``, one row group per chunk."""

    def __init__(self, path: Path, dim: int, metadata: dict[str, str] | None = None) -> None:
        self.path = path
        self.dim = dim
        self.metadata = metadata or {}
        self._writer: Any = None

    def write(self, ids: Sequence[Any], vectors: np.ndarray) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        values = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
        embedding = pa.FixedSizeListArray.from_arrays(values, self.dim)
        if self._writer is None:
            id_array = pa.array(list(ids))
            schema = pa.schema([("id", id_array.type), ("embedding", embedding.type)], metadata=self.metadata)
            self._writer = pq.ParquetWriter(self.path, schema)
        id_type = self._writer.schema.field("id").type
        try:
            id_array = pa.array(list(ids), type=id_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            raise OutputError(f"ids change type within the input (first ones were {id_type}); "
                              "make --id-field values one type") from None
        self._writer.write_table(pa.Table.from_arrays([id_array, embedding], schema=self._writer.schema))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def discard(self) -> None:
        self.close()


class QuantizingWriter:
    """Quantises each chunk of float vectors (``sentemb.quantize``, fixed ``ranges``) before ``inner`` writes it."""

    def __init__(self, inner: Writer, output: str, ranges: np.ndarray | None) -> None:
        self.inner, self.output, self.ranges = inner, output, ranges

    def write(self, ids: Sequence[Any], vectors: np.ndarray) -> None:
        from sentemb.retrieval.quantize import quantize

        self.inner.write(ids, quantize(vectors, self.output, ranges=self.ranges))

    def close(self) -> None:
        self.inner.close()

    def discard(self) -> None:
        self.inner.discard()


def open_quantized_writer(
    fmt: str, path: Path | None, dim: int, *, output: str, ranges: np.ndarray | None, facts: dict[str, Any],
    metadata: dict[str, str] | None = None,
) -> Writer:  # fmt: skip
    """A writer of ``output`` codes: packed int8/uint8 .npy, integer JSON lists, or Parquet with ranges + ``facts``."""
    from sentemb.retrieval.quantize import NUMPY_DTYPES
    from sentemb.retrieval.vectors import QuantizedParquetWriter, jsonl_header, quantize_facts

    width = dim if output.endswith("int8") else (dim + 7) // 8
    inner: Writer
    if path is not None and fmt == "parquet":
        inner = QuantizedParquetWriter(path, output, dim, ranges, metadata=metadata, extra=facts)
    elif path is not None and fmt == "npy":
        inner = NpyWriter(path, width, np.dtype(NUMPY_DTYPES[output]).str)
    else:  # JSON lines: a first line with the output type, dim and ranges, so the integer rows can be read
        lines = JsonlWriter(sys.stdout) if path is None else JsonlWriter(path.open("w", encoding="utf-8"), owned=True)
        lines.write_line(jsonl_header(quantize_facts(output, dim, ranges, facts)))
        inner = lines
    return QuantizingWriter(inner, output, ranges)
