"""Input listing and shard planning, done once on the driver.

An input shard is a fixed piece of one input file: a row range of a Parquet file (cut at row-group
boundaries, a large row group split evenly) or a byte range of a JSONL file (a line belongs to the
range its first byte falls in, as in Hadoop splits). Its output name comes from the file's path and
the shard's index in that file, so the same command always plans the same names.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import os
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sentemb.errors import ConfigError

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Shard:
    """One unit of work: rows [start, stop) of a Parquet file or bytes [start, stop) of a JSONL file."""

    name: str  # output file name, e.g. part-3f2a9c0d1e4b5a6c-00007.parquet
    path: str  # input file path on the input filesystem
    format: str  # "parquet" or "jsonl"
    start: int
    stop: int
    file_size: int  # of the input file when planned: a changed file is refused on rerun

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Shard:
        return cls(**{k: data[k] for k in ("name", "path", "format", "start", "stop", "file_size")})  # type: ignore[arg-type]


def resolve_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path on it: local paths, s3://, gs://, hdfs:// natively, and any
    other scheme through fsspec when its package is installed."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    try:
        import fsspec
    except ImportError:
        raise ConfigError(f"no filesystem for {uri!r}: pip install fsspec and the package for its scheme") from None
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"no filesystem for {uri!r}: {exc}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def file_format(path: str, requested: str = "auto") -> str | None:
    """'parquet' or 'jsonl' for a path (by suffix unless requested), None for files to ignore."""
    if requested in ("parquet", "jsonl"):
        return requested
    if requested != "auto":
        raise ConfigError(f"input_format={requested!r} is not valid; choose 'auto', 'parquet' or 'jsonl'")
    lower = path.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    return None


def _hidden(path: str, base: str) -> bool:
    rel = path[len(base) :].lstrip("/") if path.startswith(base) else os.path.basename(path)
    return any(part.startswith(("_", ".")) for part in rel.split("/"))


def _match(parts: list[str], pattern: list[str]) -> bool:
    """Component-wise glob match; '**' matches any number of components."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match(parts[1:], pattern[1:])


def list_inputs(
    uri: str, input_format: str = "auto", exclude: str | None = None
) -> tuple[pafs.FileSystem, list[pafs.FileInfo]]:
    """The input files named by ``uri`` (a file, a folder searched recursively, or a glob), sorted.

    Files and folders whose names start with '_' or '.' inside a folder are skipped (_SUCCESS, temp
    files), and so is everything under ``exclude`` (the output folder, when it lies inside the input).
    """
    parts = uri.split("/")
    glob_at = next((i for i, part in enumerate(parts) if _GLOB_CHARS & set(part)), None)
    base_uri = uri if glob_at is None else "/".join(parts[:glob_at]) or "."
    fs, base = resolve_filesystem(base_uri)
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {base_uri!r} does not exist")
    if info.type == pafs.FileType.File and glob_at is None:
        if file_format(info.path, input_format) is None:
            raise ConfigError(f"{uri!r} is neither Parquet nor JSONL by its name; pass input_format")
        return fs, [info]
    found = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    files = [f for f in found if f.type == pafs.FileType.File and not _hidden(f.path, base)]
    if exclude:
        files = [f for f in files if not f.path.startswith(exclude.rstrip("/") + "/")]
    if glob_at is not None:
        pattern = parts[glob_at:]
        files = [f for f in files if _match(f.path[len(base) :].lstrip("/").split("/"), pattern)]
    files = sorted((f for f in files if file_format(f.path, input_format) is not None), key=lambda f: f.path)
    if not files:
        raise FileNotFoundError(f"no Parquet or JSONL files found at {uri!r}")
    return fs, files


def shard_prefix(path: str) -> str:
    """Deterministic output name prefix of an input file: part-<16 hex of sha1(path)>."""
    return "part-" + hashlib.sha1(path.encode("utf-8")).hexdigest()[:16]


def _parquet_ranges(row_groups: list[int], shard_rows: int) -> list[tuple[int, int]]:
    """Row ranges cut at row-group boundaries, about shard_rows each; a big row group is split evenly."""
    ranges: list[tuple[int, int]] = []
    start = offset = 0
    for rows in row_groups:
        if rows > shard_rows:
            if offset > start:
                ranges.append((start, offset))
            pieces = -(-rows // shard_rows)
            cuts = [offset + rows * k // pieces for k in range(pieces + 1)]
            ranges.extend(itertools.pairwise(cuts))
            offset += rows
            start = offset
            continue
        if offset - start + rows > shard_rows and offset > start:
            ranges.append((start, offset))
            start = offset
        offset += rows
    if offset > start:
        ranges.append((start, offset))
    return ranges


def plan_file(
    fs: pafs.FileSystem, info: pafs.FileInfo, fmt: str, *, shard_rows: int, shard_bytes: int, columns: list[str]
) -> list[Shard]:
    """The shards of one input file (a Parquet file's schema is checked for ``columns`` on the way)."""
    prefix = shard_prefix(info.path)
    size = int(info.size or 0)
    if fmt == "parquet":
        with fs.open_input_file(info.path) as handle:
            parquet = pq.ParquetFile(handle)
            meta = parquet.metadata
            _require(info.path, set(parquet.schema_arrow.names), columns)
        groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        ranges = _parquet_ranges(groups, shard_rows)
    else:
        ranges = [(lo, min(lo + shard_bytes, size)) for lo in range(0, size, shard_bytes)]
    return [Shard(f"{prefix}-{k:05d}.parquet", info.path, fmt, lo, hi, size) for k, (lo, hi) in enumerate(ranges)]


def _require(path: str, names: set[str], columns: list[str]) -> None:
    missing = [c for c in columns if c not in names]
    if missing:
        raise ConfigError(
            f"{path} has no column(s) {missing}; it has {sorted(names)}. "
            "Pick them with --column / --id-column / --carry"
        )


def check_jsonl_columns(fs: pafs.FileSystem, info: pafs.FileInfo, columns: list[str], sample: int = 100) -> None:
    """Refuse early when none of the first ``sample`` records of a JSONL file has a column the job needs
    (a column missing from some records only makes those rows bad rows, or nulls when carried)."""
    with fs.open_input_file(info.path) as handle:
        head = handle.read(1 << 20).split(b"\n")[:-1] or [b""]
    names: set[str] = set()
    records = 0
    for line in head:
        if records >= sample:
            break
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # reported per row as a bad line
        if isinstance(record, dict):
            names.update(record)
            records += 1
    if records:
        _require(info.path, names, columns)


def plan(
    uri: str, *, input_format: str, shard_rows: int, shard_bytes: int, columns: list[str], exclude: str | None = None
) -> tuple[pafs.FileSystem, list[Shard]]:
    """List the input (less anything under ``exclude``) and plan every shard, in a deterministic order."""
    if shard_rows < 1 or shard_bytes < 1:
        raise ConfigError("shard_rows and shard_bytes must be at least 1")
    fs, files = list_inputs(uri, input_format, exclude)
    shards: list[Shard] = []
    checked_jsonl = False
    for info in files:
        fmt = file_format(info.path, input_format)
        if fmt is None:
            continue
        if fmt == "jsonl" and not checked_jsonl:
            check_jsonl_columns(fs, info, columns)
            checked_jsonl = True
        shards.extend(plan_file(fs, info, fmt, shard_rows=shard_rows, shard_bytes=shard_bytes, columns=columns))
    return fs, shards
