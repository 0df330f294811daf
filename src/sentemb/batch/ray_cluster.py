"""Where the job runs: a private local Ray instance, or a cluster the user named.

Without an address, :func:`ray_session` starts a Ray instance of its own (``address="local"``, its own
temporary folder and ports), so it cannot collide with a Ray that is already running on the machine (a
``ray start``, another job's local Ray), and it stops it afterwards. A cluster is used only when asked:
``ray_address`` (``"auto"``: the one started here with ``ray start``) or the ``RAY_ADDRESS`` variable
(set by ``ray job submit``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

# A local instance only moves shard descriptors and summaries through the object store.
LOCAL_OBJECT_STORE_BYTES = 500_000_000
# Ray's socket paths live under its temp dir and must stay under the 107-byte Unix socket limit.
_SHORT_TMP = "/tmp"


def import_ray() -> Any:
    """Ray with Ray Data, or ImportError naming the extra that installs it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ImportError("the batch job needs Ray Data: pip install 'sentemb[batch]'") from None
    return ray


def cluster_address(ray_address: str | None) -> str | None:
    """The cluster the user asked for (flag, then RAY_ADDRESS), or None for a private local instance."""
    return ray_address or os.environ.get("RAY_ADDRESS") or None


def private_temp_dir() -> str:
    """A fresh, short folder for a private Ray instance's sessions, logs and sockets."""
    parent = _SHORT_TMP if os.path.isdir(_SHORT_TMP) and os.access(_SHORT_TMP, os.W_OK) else None
    return tempfile.mkdtemp(prefix="sentemb-ray-", dir=parent)


@contextlib.contextmanager
def ray_session(ray: Any, ray_address: str | None, *, num_cpus: int | None = None) -> Iterator[str | None]:
    """Use the Ray this process is already connected to, the cluster asked for, or a private instance.

    Yields the private instance's temporary folder, else None. A private instance is shut down and its
    folder removed on the way out.
    """
    if ray.is_initialized():  # the caller set Ray up (a notebook, a test fixture): use it as it is
        yield None
        return
    address = cluster_address(ray_address)
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        try:
            yield None
        finally:
            shutdown(ray)
        return
    temp_dir = private_temp_dir()
    ray.init(
        address="local",  # a new instance even when another Ray runs here
        _temp_dir=temp_dir,
        num_cpus=num_cpus or os.cpu_count() or 1,
        object_store_memory=LOCAL_OBJECT_STORE_BYTES,
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    try:
        yield temp_dir
    finally:
        shutdown(ray)
        shutil.rmtree(temp_dir, ignore_errors=True)  # its actors' messages reached the driver's stderr


def shutdown(ray: Any) -> None:
    """Stop Ray and close Ray Data's session log files.

    Ray Data's log handlers open their file in the session folder they first write to and keep that path:
    once that session has stopped (and a private one's folder is removed), the next session in this
    process would fail on its first log line (FileNotFoundError). Closed, each handler opens the current
    session's file when it next writes.
    """
    ray.shutdown()
    try:
        from ray.data._internal.logging import SessionFileHandler
    except ImportError:  # another Ray Data layout: nothing of this kind to close
        return
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, SessionFileHandler):
            handler.close()
