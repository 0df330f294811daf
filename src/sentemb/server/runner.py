"""Run the app under uvicorn with a graceful SIGTERM: /ready turns 503, in-flight work finishes, then exit."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn
import uvicorn.config

from sentemb.server.app import create_app
from sentemb.server.protocol import guarded_protocol
from sentemb.server.service import Lifecycle
from sentemb.server.settings import ServerSettings

if TYPE_CHECKING:
    from sentemb.encoder import Encoder
    from sentemb.rerank import Reranker
    from sentemb.sparse import SparseEncoder

log = logging.getLogger("sentemb.server")


class NoQueryString(logging.Filter):
    """Drop the query string from uvicorn's access-log lines: a client may put text in a URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging setup with its access log off (sentemb.server.access replaces it) and scrubbed."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["filters"] = {"no_query": {"()": NoQueryString}}
    config["loggers"]["uvicorn.access"] = {"handlers": [], "level": "INFO", "propagate": False, "filters": ["no_query"]}
    return config


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM, report not-ready for ``drain_seconds`` (so load balancers stop sending),
    then let uvicorn stop listening and wait for in-flight requests. SIGINT skips the wait.

    A SIGTERM shutdown that has drained returns normally, so the process exits 0: uvicorn's own handler
    raises the signal again once it has stopped (exit 143), which supervisors count as a crash."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_seconds: float) -> None:
        super().__init__(config)
        self._lifecycle = lifecycle
        self._drain_seconds = drain_seconds
        self._timer: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._lifecycle.drain()
        if sig != signal.SIGTERM:  # Ctrl+C: uvicorn's handling (a second one forces the exit)
            if self._timer is not None:
                self._timer.cancel()
            super().handle_exit(sig, frame)
            return
        if self._drain_seconds > 0 and self._timer is None:
            log.info("SIGTERM: draining for %.1fs before closing the listener", self._drain_seconds)
            self._timer = threading.Timer(self._drain_seconds, self._stop)
            self._timer.daemon = True
            self._timer.start()
            return
        if self._timer is not None:  # a second SIGTERM while draining: stop waiting
            self._timer.cancel()
        self._stop()

    def _stop(self) -> None:
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Draining before uvicorn cancels what is still running, however the stop was asked for: the
        # app answers a cancelled request 503 'shutting_down' only while the service is draining.
        self._lifecycle.drain()
        await super().shutdown(sockets)


def build_server(
    encoder: Encoder, settings: ServerSettings, *, log_level: str = "info", rerankers: Sequence[Reranker] = (),
    sparse_models: Sequence[SparseEncoder] = (),
) -> DrainingServer:  # fmt: skip
    """A ready-to-run server; ``server.run()`` blocks until it has drained and stopped."""
    app = create_app(encoder, settings, rerankers, sparse_models)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        log_config=log_config(),
        access_log=False,  # sentemb.server.access logs method, route, status and time; never a query string
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout),
        timeout_keep_alive=math.ceil(settings.keep_alive_seconds),
        server_header=False,
        proxy_headers=False,
        lifespan="on",
        ws="none",
        http=guarded_protocol(settings, app.state.service.metrics),  # deadlines, header cap, slots, JSON refusals
    )
    return DrainingServer(config, app.state.service.lifecycle, settings.drain_seconds)


def serve(
    encoder: Encoder, settings: ServerSettings, *, log_level: str = "info", rerankers: Sequence[Reranker] = (),
    sparse_models: Sequence[SparseEncoder] = (),
) -> None:  # fmt: skip
    """Serve ``encoder`` (and ``rerankers``, ``sparse_models``) until SIGTERM or Ctrl+C."""
    build_server(encoder, settings, log_level=log_level, rerankers=rerankers, sparse_models=sparse_models).run()


@contextlib.contextmanager
def serve_in_background(
    encoder: Encoder,
    settings: ServerSettings,
    *,
    log_level: str = "warning",
    start_timeout: float = 60.0,
    rerankers: Sequence[Reranker] = (),
    sparse_models: Sequence[SparseEncoder] = (),
) -> Iterator[str]:
    """Run the service in a daemon thread (port 0: any free port) and yield its base URL, e.g. for
    notebooks and tests. Leaving the block stops it gracefully (in-flight requests finish)."""
    server = build_server(encoder, settings, log_level=log_level, rerankers=rerankers, sparse_models=sparse_models)
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
        port = sock.getsockname()[1]
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="sentemb-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the sentemb server did not start; see the log above")
            time.sleep(0.02)
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        try:
            yield f"http://{host}:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=settings.shutdown_timeout + 10)
    finally:
        sock.close()
