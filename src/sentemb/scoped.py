"""Quiet third-party libraries for the length of one call, and put everything back afterwards.

A library call must not change its process: no ``logging.disable``, no environment variable left
set, no progress-bar switch flipped for everyone. Each context manager here changes only what it
must, only for the calling thread where the library allows it, and restores the previous state when
the last caller leaves: they nest, and several threads may be inside at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

_lock = threading.Lock()


class _Shared:
    """A change applied by the first thread in and undone by the last one out.

    ``apply`` makes the change and returns what undoes it; ``threads`` counts who is inside.
    """

    def __init__(self, apply: Callable[[], Callable[[], None]]) -> None:
        self.apply = apply
        self.threads: Counter[int] = Counter()
        self.undo: Callable[[], None] | None = None

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        me = threading.get_ident()
        with _lock:
            if not self.threads:
                self.undo = self.apply()
            self.threads[me] += 1
        try:
            yield
        finally:
            with _lock:
                self.threads[me] -= 1
                if self.threads[me] <= 0:
                    del self.threads[me]
                if not self.threads and self.undo is not None:
                    self.undo()
                    self.undo = None


class _QuietThreads(logging.Filter):
    """Drops records under ERROR that threads inside :func:`quiet` emit; others pass untouched."""

    def __init__(self) -> None:
        super().__init__("sentemb-quiet")
        self.targets: list[logging.Filterer] = []

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.thread not in _quiet.threads

    def cover(self, targets: list[logging.Filterer]) -> None:
        for target in targets:
            if target not in self.targets:
                target.addFilter(self)
                self.targets.append(target)

    def uncover(self) -> None:
        for target in self.targets:
            target.removeFilter(self)
        self.targets = []


_log_filter = _QuietThreads()


def _quiet_apply() -> Callable[[], None]:
    """Filter where records pass: the root logger (direct ``logging.warning`` calls) and the handlers
    records propagate to (or Python's last-resort handler); ignore warnings (Python keeps one filter
    list per process)."""
    targets: list[logging.Filterer] = [logging.root, *logging.root.handlers]
    if logging.lastResort is not None:
        targets.append(logging.lastResort)
    _log_filter.cover(targets)
    caught = warnings.catch_warnings()
    caught.__enter__()
    warnings.simplefilter("ignore")

    def undo() -> None:
        caught.__exit__(None, None, None)
        _log_filter.uncover()

    return undo


_quiet = _Shared(_quiet_apply)


@contextlib.contextmanager
def quiet(*loggers: str) -> Iterator[None]:
    """Hide log records under ERROR that this thread emits inside the block, and warnings.

    ``loggers`` names loggers that do not propagate to the root (nncf keeps its own stdout handler).
    Records of other threads, errors, and the logging configuration itself are left alone.
    """
    with _quiet.scope():
        with _lock:
            for name in loggers:
                named = logging.getLogger(name)
                _log_filter.cover([named, *named.handlers])
        yield


_env: dict[str, _Shared] = {}


def _env_apply(name: str, value: str) -> Callable[[], None]:
    previous = os.environ.get(name)
    os.environ.setdefault(name, value)

    def undo() -> None:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous

    return undo


def env_var(name: str, value: str) -> contextlib.AbstractContextManager[None]:
    """``os.environ[name] = value`` inside the block (unless already set), the previous state after it.

    For libraries that read a variable once, when they are imported (NNCF's telemetry switch).
    """
    with _lock:
        shared = _env.setdefault(name, _Shared(lambda: _env_apply(name, value)))
    return shared.scope()


def _bars_apply() -> Callable[[], None]:
    from transformers.utils import logging as hf_logging
    from transformers.utils.logging import EmptyTqdm

    set_hook = getattr(hf_logging, "set_tqdm_hook", None)
    if set_hook is None:  # older releases draw no bar for a single weights file
        return lambda: None
    previous = None

    def hook(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if threading.get_ident() in _bars.threads:
            return EmptyTqdm(*args, **kwargs)
        return previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)

    previous = set_hook(hook)

    def undo() -> None:
        current = set_hook(previous)
        if current is not hook:  # someone replaced ours meanwhile: keep theirs
            set_hook(current)

    return undo


_bars = _Shared(_bars_apply)


def no_progress_bars() -> contextlib.AbstractContextManager[None]:
    """No transformers progress bars ("Loading weights") from this thread inside the block.

    A bar for a 0.1 s weight load is noise in a library. Other threads keep theirs, and the global
    switches (``transformers.utils.logging.disable_progress_bar``, huggingface_hub's) are never
    touched: the block installs a tqdm hook that answers for this thread only.
    """
    return _bars.scope()


def _console_apply() -> Callable[[], None]:
    try:
        from rich import get_console
    except ImportError:  # no rich: nothing draws
        return lambda: None
    console = get_console()
    previous = console.quiet
    console.quiet = True

    def undo() -> None:
        console.quiet = previous

    return undo


_console = _Shared(_console_apply)


def quiet_console() -> contextlib.AbstractContextManager[None]:
    """rich's shared console (NNCF's "Statistics collection" bar) prints nothing inside the block.

    That bar goes to stdout, where it would corrupt ``sentemb encode -o -`` on a first int8 export.
    rich has one console per process: its ``quiet`` flag is set by the first caller in and restored
    by the last one out.
    """
    return _console.scope()
