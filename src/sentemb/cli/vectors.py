"""What made a vector file: the facts `sentemb encode` writes into a Parquet footer and `search` checks.

The facts are the batch job's manifest header (:func:`sentemb.batch.manifest.make_header`, the same
keys and meanings) less its shard layout. Files are compared on what changes the vectors: the
weights' sha256, dim, pooling, normalisation, max length, long-text handling and the numerics.
fp32 on torch, ONNX Runtime and OpenVINO give the same vectors (within 2e-7 on all-MiniLM-L6-v2),
so they compare equal as ``exact``; int8 and bf16 vectors differ per backend and are named by it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sentemb.cli.common import InputError

if TYPE_CHECKING:
    from sentemb.encoder import Encoder

META_KEY = "sentemb"
FORMAT_VERSION = 1
COMPARED = ("sha256", "dim", "pooling", "normalize", "max_length", "long_text", "chunk_overlap", "numerics")
_SHOWN = ("model", "pooling", "normalize", "max_length", "long_text", "precision", "backend")


def vector_facts(encoder: Encoder) -> dict[str, Any]:
    """The facts that decide ``encoder``'s vectors (plus the model's name, for people)."""
    from sentemb.batch.manifest import make_header

    header = make_header(encoder.describe().to_dict(), {}, shard_rows=0, shard_bytes=0)
    for layout in ("shard_rows", "shard_bytes", "format_version"):
        header.pop(layout)
    header["chunk_overlap"] = encoder.config.chunk_overlap
    precision = str(header["precision"])
    header["numerics"] = "exact" if precision == "fp32" else f"{header['backend']} {precision}"
    header["format_version"] = FORMAT_VERSION
    return header


def parquet_metadata(encoder: Encoder) -> dict[str, str]:
    return {META_KEY: json.dumps(vector_facts(encoder), sort_keys=True)}


def read_facts(metadata: dict[bytes, bytes] | None) -> dict[str, Any] | None:
    """The facts in a Parquet schema's metadata, or None (a file from another tool or an older sentemb)."""
    raw = (metadata or {}).get(META_KEY.encode())
    if raw is None:
        return None
    try:
        facts = json.loads(raw)
    except ValueError:
        return None
    return facts if isinstance(facts, dict) else None


def check_facts(saved: dict[str, Any], encoder: Encoder, path: str) -> None:
    """Refuse to compare queries with vectors another model or other options made."""
    now = vector_facts(encoder)
    diffs = [f"{key}: {_short(saved.get(key))} there, {_short(now.get(key))} now"
             for key in COMPARED if saved.get(key) != now.get(key)]
    if diffs:
        made = ", ".join(f"{key} {saved.get(key)}" for key in _SHOWN)
        raise InputError(
            f"{path}: its vectors were made with another model or options ({'; '.join(diffs)}); search with "
            f"the options that made them ({made}), or encode the corpus again with these"
        )


def _short(value: Any) -> str:
    if isinstance(value, dict):  # sha256 of each weights file
        return ",".join(f"{name}={str(digest)[:12]}" for name, digest in value.items())
    return repr(value)
