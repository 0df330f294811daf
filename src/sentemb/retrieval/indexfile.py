"""An index on disk: a folder written atomically, every file's sha256 in ``index.json``.

    docs.index/
      index.json      format, options, dim, count, the model's facts (name, sha256, pooling, ...),
                      int8 ranges, and {file: {bytes, sha256}} for the files below
      ids.npy         int64 or unicode ids, row order
      vectors.npy     the codes (exact indexes)   | graph.usearch   the HNSW graph (approximate ones)
      rescore.npy     int8 or float32 copy for rescoring a binary index (memory-mapped on load)

The folder is filled under a temporary name beside the target and renamed into place, so a crash
leaves either the old index or the new one. Loading checks sizes and (by default) checksums and
refuses anything it does not know, naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from sentemb.errors import ConfigError, IndexFileError
from sentemb.retrieval.index import Index, IndexOptions
from sentemb.retrieval.stores import FlatStore, GraphStore, Store

FORMAT = "sentemb.index"
FORMAT_VERSION = 1
META = "index.json"
IDS = "ids.npy"
RESCORE = "rescore.npy"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_index(index: Index, path: str | os.PathLike[str], *, force: bool = False) -> None:
    target = Path(path)
    if target.exists() and not force:
        raise ConfigError(f"{target}: already exists; pass force=True (CLI: --force) to replace it")
    if target.exists() and not (target / META).is_file():
        raise ConfigError(f"{target}: exists and is not a sentemb index; refusing to replace it")
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        names = index.store.save(temp)
        np.save(temp / IDS, index.ids, allow_pickle=False)
        names.append(IDS)
        if index.side is not None:
            np.save(temp / RESCORE, np.ascontiguousarray(index.side), allow_pickle=False)
            names.append(RESCORE)
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "count": len(index), "dim": index.dim,
            "options": asdict(index.options), "model": index.model,
            "ranges": None if index.ranges is None else index.ranges.tolist(),
            "files": {name: {"bytes": (temp / name).stat().st_size, "sha256": _sha256(temp / name)} for name in names},
        }  # fmt: skip
        (temp / META).write_text(json.dumps(meta, indent=1))
        _swap_in(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _swap_in(temp: Path, target: Path) -> None:
    """Rename ``temp`` to ``target``; an existing target is moved aside first and removed after."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        os.replace(target, old)
    try:
        os.replace(temp, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_meta(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        what = "is a file, not an index folder" if folder.exists() else "no such index"
        raise IndexFileError(f"{folder}: {what}; build one with `sentemb index build`")
    try:
        meta = json.loads((folder / META).read_text())
    except FileNotFoundError:
        raise IndexFileError(f"{folder}: no {META}; not a sentemb index (build one: `sentemb index build`)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexFileError(f"{folder}/{META}: damaged ({exc}); rebuild the index") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise IndexFileError(f"{folder}/{META}: not a sentemb index description; rebuild the index")
    if meta.get("format_version") != FORMAT_VERSION:
        raise IndexFileError(
            f"{folder}: index format {meta.get('format_version')} is not {FORMAT_VERSION}; "
            "rebuild it with this sentemb or upgrade sentemb"
        )
    return meta


def _check_files(folder: Path, files: dict[str, Any], verify: bool) -> None:
    for name, facts in files.items():
        path = folder / name
        if not path.is_file():
            raise IndexFileError(f"{folder}: {name} is missing; the index is incomplete, rebuild it")
        if path.stat().st_size != facts["bytes"]:
            raise IndexFileError(f"{path}: {path.stat().st_size} bytes, {facts['bytes']} expected; rebuild the index")
        if verify and _sha256(path) != facts["sha256"]:
            raise IndexFileError(f"{path}: checksum differs from the one recorded; the file is damaged, rebuild it")


def load_index(cls: type[Index], path: str | os.PathLike[str], *, mmap: bool, verify: bool) -> Index:
    folder = Path(path)
    meta = read_meta(folder)
    try:
        known = {f.name for f in fields(IndexOptions)}
        unknown = set(meta["options"]) - known
        if unknown:
            raise IndexFileError(f"{folder}: unknown index options {sorted(unknown)}; upgrade sentemb")
        options = IndexOptions(**meta["options"])
        files = dict(meta["files"])
        _check_files(folder, files, verify)
        store: Store = (FlatStore if options.exact else GraphStore).load(folder, options, mmap)
        ids = np.load(folder / IDS, allow_pickle=False)
        side = None
        if RESCORE in files:
            side = np.load(folder / RESCORE, mmap_mode="r" if mmap else None, allow_pickle=False)
        ranges = None if meta.get("ranges") is None else np.asarray(meta["ranges"], dtype=np.float32)
        index = cls(options=options, dim=int(meta["dim"]), store=store, ids=ids, model=dict(meta.get("model") or {}),
                    ranges=ranges, side=side)  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, IndexFileError):
            raise
        raise IndexFileError(f"{folder}: damaged index ({type(exc).__name__}: {exc}); rebuild it") from None
    if len(index) != int(meta["count"]) or (side is not None and len(side) != len(index)):
        raise IndexFileError(f"{folder}: holds {len(index)} ids but records {meta['count']}; rebuild the index")
    return index


