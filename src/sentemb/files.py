"""Writing a file whole or not at all: readers (other processes, a resumed run) never see half of it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_file(target: Path, *, hold: Callable[[int], object] | None = None) -> Iterator[Path]:
    """A private temporary file beside ``target`` (``.NAME.*.part``) to write; renamed onto ``target``
    when the block ends without an error, removed otherwise.

    The file gets the mode a plain ``open()`` would give (``mkstemp`` makes it 0o600). ``hold`` is called
    with the open descriptor first (e.g. to lock it while the block runs). OSError from making the
    temporary file or from the rename propagates to the caller.
    """
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    temp = Path(name)
    try:
        if hold is not None:
            hold(fd)
        yield temp
        temp.chmod(default_mode())
        os.replace(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        os.close(fd)


def write_text_atomic(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically, making its folder if needed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target) as temp:
        temp.write_text(text, encoding="utf-8")


def default_mode() -> int:
    """0o666 less the umask: the mode a plain ``open()`` gives a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
