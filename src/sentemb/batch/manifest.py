"""The output folder's manifest (``_manifest.json``) and the resume decision.

The header records everything that decides the vectors and the layout (model sha256, pooling,
normalisation, max length, dim, columns, shard sizes); a rerun with a different header is refused.
Each committed shard gets an entry (source range, input size, rows, bad rows). Only the driver writes
the manifest, atomically, and only after the shard's file was committed; a shard committed just
before a kill has its entry in its own Parquet footer and is adopted on the rerun.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from sentemb.batch.io import TMP_PREFIX, commit_bytes, footer_meta, join
from sentemb.batch.shards import Shard
from sentemb.errors import ConfigError

MANIFEST = "_manifest.json"
ERRORS = "_errors.jsonl"
ERRORS_DIR = "_errors"
FORMAT_VERSION = 2  # 2: the prompt and truncate_dim are part of the header
# Header keys that must match between runs into one folder ("model" is informative: the sha256 decides).
COMPARED = (
    "format_version",
    "sha256",
    "dim",
    "pooling",
    "normalize",
    "max_length",
    "long_text",
    "chunk_overlap",
    "truncate_dim",
    "prompt",
    "precision",
    "backend",
    "id_column",
    "text_column",
    "embedding_column",
    "carry_columns",
    "shard_rows",
    "shard_bytes",
    "output_type",  # float32 shards and int8 shards (or int8 from other calibration texts) must not mix
    "calibration_sha256",
)


def errors_name(shard_name: str) -> str:
    """The sidecar in ``_errors/`` listing a shard's bad rows (written before the shard is committed)."""
    return shard_name.removesuffix(".parquet") + ".jsonl"


def make_header(
    described: Mapping[str, object], columns: Mapping[str, object], shard_rows: int, shard_bytes: int
) -> dict:
    """The manifest header from ``Encoder.describe()`` and the job's columns and shard sizes."""
    header = {k: described[k] for k in ("model", "sha256", "dim", "pooling", "normalize", "max_length")}
    header.update({k: described[k] for k in ("long_text", "precision", "backend")})
    header["chunk_overlap"] = described.get("chunk_overlap")
    header["truncate_dim"] = described.get("truncate_dim")
    header["prompt"] = described.get("prompt_text")  # the text put before each input ("" for none)
    header.update(columns)
    header.update(format_version=FORMAT_VERSION, shard_rows=shard_rows, shard_bytes=shard_bytes)
    return header


def fingerprint(header: dict) -> str:
    """A short hash of the compared header fields, stored in every shard's footer."""
    compared = {k: header.get(k) for k in COMPARED}
    return hashlib.sha256(json.dumps(compared, sort_keys=True).encode()).hexdigest()[:16]


def check_header(old: dict, new: dict, where: str) -> None:
    """Refuse to mix vectors: every compared field must be equal."""
    diffs = [f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in COMPARED if old.get(k) != new.get(k)]
    if diffs:
        raise ConfigError(
            f"{where} holds output of a different model or options ({'; '.join(diffs)}). Refusing to mix "
            "vectors: rerun with the same model and options, or write to a new output folder"
        )


def shard_entry(shard: Shard, rows: int, errors: int) -> dict[str, object]:
    return {"source": shard.path, "start": shard.start, "stop": shard.stop, "file_size": shard.file_size,
            "rows": rows, "errors": errors}  # fmt: skip


@dataclass
class Manifest:
    """The manifest in memory; :meth:`save` writes it atomically."""

    header: dict
    shards: dict[str, dict] = field(default_factory=dict)

    def save(self, fs: pafs.FileSystem, folder: str, planned: int) -> None:
        rows = sum(int(e["rows"]) for e in self.shards.values())
        errors = sum(int(e["errors"]) for e in self.shards.values())
        body = {
            "header": self.header,
            "complete": len(self.shards) == planned,
            "totals": {"shards": len(self.shards), "planned_shards": planned, "rows": rows, "errors": errors},
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "shards": dict(sorted(self.shards.items())),
        }
        commit_bytes(fs, folder, MANIFEST, json.dumps(body, indent=1).encode())


def load_manifest(fs: pafs.FileSystem, folder: str) -> Manifest | None:
    path = join(folder, MANIFEST)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as handle:
        body = json.loads(handle.read())
    return Manifest(body["header"], dict(body.get("shards", {})))


def _same_range(entry: dict, shard: Shard) -> bool:
    return (entry.get("source"), entry.get("start"), entry.get("stop")) == (shard.path, shard.start, shard.stop)


def reconcile(fs: pafs.FileSystem, folder: str, header: dict, planned: list[Shard]) -> tuple[Manifest, list[Shard]]:
    """Open (or start) the folder's manifest and return it with the shards still to do.

    Deletes temporary files a killed run left; adopts shards committed after the last manifest
    write; refuses a different header, a changed input file, or shards of inputs not in this run.
    """
    fs.create_dir(join(folder, ERRORS_DIR), recursive=True)
    manifest = load_manifest(fs, folder)
    if manifest is None:
        manifest = Manifest(header)
    else:
        check_header(manifest.header, header, folder)
        manifest.header = header  # same compared fields; keeps the newest model name
    present: dict[str, pafs.FileInfo] = {}
    for sub in (folder, join(folder, ERRORS_DIR)):
        if fs.get_file_info(sub).type != pafs.FileType.Directory:
            continue
        for info in fs.get_file_info(pafs.FileSelector(sub)):
            if info.base_name.startswith(TMP_PREFIX):
                fs.delete_file(info.path)
            elif sub == folder and info.type == pafs.FileType.File:
                present[info.base_name] = info
    by_name = {s.name: s for s in planned}
    strays = sorted(n for n in manifest.shards if n not in by_name)
    if strays:
        raise ConfigError(
            f"{folder} holds shards of inputs that are not in this run (e.g. {strays[0]} from "
            f"{manifest.shards[strays[0]].get('source')}); use the same input, or a new output folder"
        )
    want = fingerprint(header)
    todo: list[Shard] = []
    for shard in planned:
        entry = manifest.shards.get(shard.name)
        if entry is None and shard.name in present:  # committed, killed before the manifest write
            meta, num_rows = footer_meta(fs, present[shard.name].path)
            if meta is None or meta.get("fingerprint") != want:
                raise ConfigError(
                    f"{join(folder, shard.name)} was written with a different model or options; "
                    "refusing to mix vectors: use a new output folder"
                )
            adopted = meta.get("entry")
            if meta.get("rows") == num_rows and isinstance(adopted, dict):
                entry = manifest.shards[shard.name] = dict(adopted)
        if entry is not None and not _same_range(entry, shard):
            raise ConfigError(f"{folder}/{shard.name} was planned differently; use a new output folder")
        if entry is not None and entry.get("file_size") != shard.file_size:
            raise ConfigError(
                f"input {shard.path} changed since {shard.name} was written (size {entry.get('file_size')} "
                f"then, {shard.file_size} now); write to a new output folder"
            )
        if entry is None or shard.name not in present:
            manifest.shards.pop(shard.name, None)
            todo.append(shard)
    return manifest, todo
