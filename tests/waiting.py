"""Waiting in tests: on a server's own output where it says what happened, else on its state seen from outside."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable


def read_until(proc: subprocess.Popen, needle: str) -> None:
    """Block on a subprocess's text output until a line holds ``needle`` (no polling); fails with the
    output so far when the process exits first."""
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if needle in line:
            return
    raise AssertionError(f"the process exited before printing {needle!r}:\n" + "".join(seen)[-3000:])


def wait_until(predicate: Callable[[], bool], what: str = "the condition", hang_s: float = 120.0) -> None:
    """Poll a state only visible from outside (/ready, /metrics, a queue depth). The deadline only turns
    a hang into a failure; the pause between polls leaves the server the GIL (a count of quick polls
    once ran out before an in-process server's warm-up under a random test order)."""
    deadline = time.monotonic() + hang_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} was not reached"
        time.sleep(0.02)
