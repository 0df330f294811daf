"""The export cache: one folder per recipe, built once, published atomically, shared by processes.

How concurrent processes stay safe (a server and a CLI exporting the same model at once):

* A folder that passes its manifest check is never moved, deleted or written to; a process that
  finds one uses it straight away.
* An export is built in a private ``.partial-*`` folder beside the entry and renamed into place in
  one step, so nobody ever sees half a folder.
* Builders of one entry take an advisory lock (``flock`` on ``.<entry>.lock``; none where the OS
  has none), so the second one waits and then uses the first one's export instead of building again.
* A damaged entry (files that no longer match the manifest) is renamed aside, then deleted, and
  rebuilt; a rename that loses to another process's fresh export keeps that export.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sentemb.errors import BackendError, SentembError
from sentemb.export.manifest import Exported, check_export
from sentemb.export.recipe import RUNTIME_LABELS, Recipe, recipe_for
from sentemb.models.resolve import CACHE_ENV, cache_root

if TYPE_CHECKING:
    from sentemb.config import Precision
    from sentemb.models import ModelSpec

log = logging.getLogger("sentemb")

_PUBLISH_ATTEMPTS = 3


def export_root(export_dir: str | None = None) -> Path:
    """Where exports are cached: ``export_dir`` when given, else :func:`cache_root`
    (``$SENTEMB_CACHE``, else ``$XDG_CACHE_HOME/sentemb``, else ``~/.cache/sentemb``)."""
    return Path(export_dir).expanduser() if export_dir else cache_root()


def find_export(
    spec: ModelSpec, precision: Precision, *, runtime: str = "onnx", export_dir: str | None = None
) -> Exported | None:
    """The intact cached export of ``spec`` for ``runtime`` at ``precision``, or None; never builds."""
    recipe = recipe_for(spec, precision, runtime)
    return check_export(export_root(export_dir) / runtime / recipe.folder_name, recipe.key)


def ensure_export(
    spec: ModelSpec,
    precision: Precision,
    *,
    runtime: str = "onnx",
    export_dir: str | None = None,
    trust_remote_code: bool = False,
) -> Exported:
    """The cached export of ``spec`` at ``precision`` for ``runtime``, built (once) if missing or damaged."""
    if spec.static is not None:
        from sentemb.errors import ConfigError

        raise ConfigError(
            f"{spec.root} is a static embedding model: a table lookup with no graph to export; "
            f"run it as it is (`sentemb encode -m {spec.root}`)"
        )
    found = find_export(spec, precision, runtime=runtime, export_dir=export_dir)
    if found is not None:
        return found
    recipe = recipe_for(spec, precision, runtime)
    parent = export_root(export_dir) / runtime
    final = parent / recipe.folder_name
    _make_folder(parent, recipe, export_dir)
    with _builder_lock(parent / f".{final.name}.lock"):
        found = check_export(final, recipe.key)  # built by another process while this one waited
        if found is not None:
            return found
        move_aside(final)
        work = _private_folder(parent, recipe, export_dir)
        try:
            log.info("sentemb: exporting %s to %s (%s), once, into %s", spec.transformer_dir, recipe.label,
                     recipe.precision.value, final)  # fmt: skip
            _build(spec, recipe, work, trust_remote_code)
            return publish(work, final, recipe.key, recipe.label)
        finally:
            shutil.rmtree(work, ignore_errors=True)  # gone already once published


def _build(spec: ModelSpec, recipe: Recipe, work: Path, trust_remote_code: bool) -> None:
    from sentemb.export import build

    try:
        build.build_export(spec, recipe, work, trust_remote_code=trust_remote_code)
    except SentembError:
        raise
    except (OSError, RuntimeError) as exc:
        raise BackendError(
            f"the {recipe.label} export of {spec.transformer_dir} ({recipe.precision.value}) failed: {exc}"
        ) from exc


def _where(export_dir: str | None) -> str:
    return "pass another export_dir (CLI: --export-dir)" if export_dir else f"point {CACHE_ENV} at a writable folder"


def _make_folder(parent: Path, recipe: Recipe, export_dir: str | None) -> None:
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendError(
            f"cannot write the {recipe.label} export cache at {parent} ({exc.strerror or exc}); {_where(export_dir)}"
        ) from None


def _private_folder(parent: Path, recipe: Recipe, export_dir: str | None) -> Path:
    try:
        work = Path(tempfile.mkdtemp(prefix=".partial-", dir=parent))
        work.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    except OSError as exc:
        raise BackendError(
            f"cannot write the {recipe.label} export cache at {parent} ({exc.strerror or exc}); {_where(export_dir)}"
        ) from None
    return work


@contextlib.contextmanager
def _builder_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (released when the process dies, too).

    Where the OS or the file system has no ``flock``, builders run unlocked: the atomic rename
    and the check in :func:`publish` still keep readers safe, at the cost of duplicate work.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):  # a file system without locks (some network mounts)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def move_aside(folder: Path) -> None:
    """Rename ``folder`` (a damaged or partial export) out of the way, then delete it.

    The rename is atomic: a process that looks for the entry sees either the old folder or none.
    """
    aside = folder.with_name(f".damaged-{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return
    log.warning("sentemb: %s did not match its manifest; rebuilding it", folder)
    shutil.rmtree(aside, ignore_errors=True)


def publish(work: Path, final: Path, key: str, label: str) -> Exported:
    """Rename the finished folder ``work`` to ``final``; if another process got there first with a
    sound export, keep that one (``work`` is left for the caller to delete)."""
    for _ in range(_PUBLISH_ATTEMPTS):
        try:
            os.rename(work, final)
            break
        except OSError:
            if not final.exists():
                raise
            found = check_export(final, key)
            if found is not None:
                return found
            move_aside(final)
    found = check_export(final, key)
    if found is None:
        raise BackendError(f"the {label} export in {final} could not be written or read back; try again")
    return found


def export_to(
    spec: ModelSpec,
    precision: Precision,
    out: Path,
    *,
    runtime: str = "onnx",
    export_dir: str | None = None,
    trust_remote_code: bool = False,
) -> Exported:
    """Copy the (cached, built if needed) export of ``spec`` into the folder ``out``, with the model's
    configs and modules beside it, so that ``sentemb.load(out)`` runs it without the source model."""
    exported = ensure_export(
        spec, precision, runtime=runtime, export_dir=export_dir, trust_remote_code=trust_remote_code
    )
    out.mkdir(parents=True, exist_ok=True)
    for name in exported.files:
        shutil.copyfile(exported.folder / name, out / name)
    from sentemb.export.prebuilt import write_heads

    write_heads(spec, out)  # pooling, Dense, normalise, prompts and configs: the folder loads on its own
    copied = check_export(out)
    if copied is None:
        label = RUNTIME_LABELS[exported.runtime]
        raise BackendError(f"the {label} export copied into {out} does not match its manifest; try again")
    return copied
