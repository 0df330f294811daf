"""uvicorn's httptools protocol with the limits uvicorn lacks, and JSON refusals.

uvicorn has no timeout for reading a request (a connection that sends half a request line, or
headers then nothing, stays open for ever), no header size cap with httptools, its connection limit
(``limit_concurrency``) answers 503 to everyone once idle or slow connections fill it, and it answers
malformed HTTP in plain text. Per connection, this protocol adds:

- a header deadline, ``header_timeout`` (from the connection's first byte, or from the first byte of
  the next request on a keep-alive connection), then ``read_timeout`` for the body; past either 408,
  or a silent close if nothing came;
- ``max_header_bytes`` for the request line and headers: 431;
- connection slots (:mod:`sentemb.server.slots`): ``max_connections`` in all and
  ``max_client_connections`` per client address, where a new connection takes the slot of the
  longest-waiting connection that is not serving a request (idle keep-alive, or still sending its
  headers), so slow and idle clients cannot lock others out; only when every slot is serving a
  request is a new connection answered 503 (429 when its client's own slots are the ones all serving)
  and closed;
- malformed HTTP answered in the JSON error shape (400).

Idle keep-alive connections are also closed by uvicorn's own ``timeout_keep_alive``.

This subclasses uvicorn's ``HttpToolsProtocol`` and uses its per-request state (``cycle``), which
uvicorn does not promise to keep: pyproject bounds uvicorn to the versions tested, and
:func:`check_uvicorn` refuses to start on one whose internals have moved.
"""

from __future__ import annotations

import array
import asyncio
import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sentemb.errors import ConfigError
from sentemb.server.errors import INVALID, SERVER, error_body
from sentemb.server.metrics import Metrics
from sentemb.server.settings import ServerSettings
from sentemb.server.slots import Slots

# The uvicorn versions this protocol was tested with (pyproject.toml says the same).
SUPPORTED_UVICORN = ">=0.29,<0.56"

try:  # bytes waiting in a socket's receive buffer (FIONREAD: Linux, macOS, the BSDs)
    import fcntl
    import termios

    def _unread(fd: int) -> int:
        count = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, count)
        return count[0]

    _unread_bytes: Callable[[int], int] | None = _unread
except ImportError:  # pragma: no cover - Windows: every waiting connection may make room
    _unread_bytes = None

# A refused connection is half-closed and then given this long to read the answer and hang up.
_LINGER_SECONDS = 2.0


def raw_response(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response in the JSON error shape, closing the connection."""
    kind = SERVER if status >= 500 else "rate_limit_error" if status == 429 else INVALID
    body = json.dumps(error_body(message, kind, None, code)).encode()
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "content-type: application/json"]
    lines += [f"content-length: {len(body)}", "connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def guarded_protocol(settings: ServerSettings, metrics: Metrics | None = None) -> type[HttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with ``settings``' limits (one per server:
    its connections share one set of slots), counting open and dropped connections in ``metrics``."""
    check_uvicorn()
    slots: Slots[GuardedProtocol] = Slots(settings.max_connections, settings.max_client_connections)
    attributes: dict[str, Any] = {
        "header_timeout": settings.header_timeout,
        "read_timeout": settings.read_timeout,
        "max_header_bytes": settings.max_header_bytes,
        "slots": slots,
        "lingering": set(),
    }
    if metrics is not None:
        metrics.connections.set_function(lambda: len(slots))
        attributes["dropped"] = staticmethod(metrics.dropped_connection)
    return type("GuardedHttpToolsProtocol", (GuardedProtocol,), attributes)


def _not_counted(reason: str) -> None:
    pass


# What GuardedProtocol uses of uvicorn beyond asyncio.Protocol: the parser callbacks it wraps, and
# per request the cycle's flags and event. tests/test_server_uvicorn.py checks them on the installed
# uvicorn, and pyproject's upper bound keeps an untested uvicorn out.
PROTOCOL_METHODS = (
    "connection_made", "connection_lost", "data_received", "on_message_begin", "on_url", "on_header",
    "on_headers_complete", "on_body", "on_message_complete", "on_response_complete", "send_400_response",
)  # fmt: skip
CYCLE_ATTRIBUTES = ("response_started", "disconnected", "message_event")


def check_uvicorn() -> None:
    """Raise a ConfigError naming the fix when the installed uvicorn lacks what GuardedProtocol uses."""
    missing = [name for name in PROTOCOL_METHODS if not callable(getattr(HttpToolsProtocol, name, None))]
    if missing:
        raise ConfigError(
            f"uvicorn {uvicorn.__version__} changed the HTTP protocol the sentemb server builds on "
            f"(no {', '.join(missing)}); install a supported one: pip install 'uvicorn{SUPPORTED_UVICORN}'"
        )


def _has_no_request_waiting(connection: GuardedProtocol) -> bool:
    """False when bytes have arrived that this server has not read yet: its client has sent the next
    request (the event loop may accept a burst of connections before it reads), so closing it now would
    fail a request in flight."""
    if _unread_bytes is None:
        return True
    sock = connection.transport.get_extra_info("socket")
    try:
        return sock is None or _unread_bytes(sock.fileno()) == 0
    except OSError:
        return True


class GuardedProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    read_timeout: float = 30.0
    max_header_bytes: int = 32 * 1024
    slots: ClassVar[Slots[GuardedProtocol]] = Slots(512, 256)
    dropped: Callable[[str], None] = staticmethod(_not_counted)  # a closed or refused connection's reason
    # Refused connections given _LINGER_SECONDS to read their answer; at most as many as there are slots,
    # so that clients refused in a flood cannot use up the process's file descriptors.
    lingering: ClassVar[set[GuardedProtocol]] = set()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._in_headers = True  # reading a request line and headers (not a body, not idle)
        self._raw_bytes = 0  # received while reading headers (catches one that never ends)
        self._header_bytes = 0  # request line and headers as parsed
        self._seen_bytes = False
        self._refused = False
        self._requests = 0  # requests whose headers are in and whose response is not yet sent

    # -- deadlines -------------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._on_deadline)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            self.transport.close()  # an answer is on its way already
            return
        self.dropped("header_timeout" if self._in_headers else "body_timeout")
        if not self._seen_bytes:
            self.transport.close()  # nothing came: nothing to answer
            return
        if self._in_headers:
            message = f"the request's headers did not arrive within {self.header_timeout:g}s"
        else:
            message = f"the request's body did not arrive within {self.read_timeout:g}s"
        self._refuse(408, message, "request_timeout")
        if cycle is not None:
            cycle.disconnected = True  # the app stops waiting for a body that will not come
            cycle.message_event.set()

    def _refuse(self, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
        """Answer now, give up the slot, stop reading, and hang up once the client has read the answer."""
        self._refused = True
        self._disarm()
        self.slots.release(self)
        self.transport.write(raw_response(status, message, code, headers))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if len(self.lingering) >= self.slots.total:  # refused by the thousand: no file descriptors to spare
            self.transport.close()
            return
        self.lingering.add(self)
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    # -- slots -------------------------------------------------------------------------------------

    def _take_slot(self) -> bool:
        client = self.client[0] if self.client else ""
        admission = self.slots.admit(self, client, _has_no_request_waiting)
        if admission.evict is not None:
            admission.evict._make_room()
        if admission.admitted:
            return True
        if admission.full == "client":  # the client's own doing: 429, as for too many requests
            self.dropped("client_cap")
            message = (
                f"this address has {self.slots.per_client} connections open, all serving requests; send fewer "
                "requests at once, or retry shortly"
            )
            self._refuse(429, message, "too_many_connections", {"retry-after": "1"})
        else:
            self.dropped("server_full")
            message = f"the server has {self.slots.total} connections open, all serving requests; retry shortly"
            self._refuse(503, message, "too_many_connections", {"retry-after": "1"})
        return False

    def _make_room(self) -> None:
        """Give up this connection's slot to a new one: it is idle, or still sending its headers."""
        if not self._seen_bytes:  # idle (or silent since it opened): close it as keep-alive timeouts do
            self.dropped("evicted_idle")
            self._refused = True
            self._disarm()
            self.slots.release(self)
            self.transport.close()
            return
        self.dropped("evicted_headers")
        self._refuse(
            503,
            "the server needed this connection's slot for another while the request's headers were still "
            "arriving; retry, sending the whole request at once",
            "too_many_connections",
            {"retry-after": "1"},
        )

    # -- uvicorn's protocol, with the checks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._take_slot():
            self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.slots.release(self)
        self.lingering.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped until the client hangs up
        if self._in_headers:
            self._raw_bytes += len(data)
            if not self._seen_bytes:
                self._seen_bytes = True
                self._arm(self.header_timeout)  # after a keep-alive pause, the deadline counts from the first byte
        super().data_received(data)
        if self._in_headers and self._raw_bytes > self.max_header_bytes and not self._refused:
            self._too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._header_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._header_bytes += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        if self._header_bytes > self.max_header_bytes:
            self._too_large()
            return
        self._in_headers = False
        self._requests += 1
        self.slots.busy(self)  # serving a request: never evicted until it has answered
        self._arm(self.read_timeout)  # the body's deadline
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        super().on_message_complete()
        self._in_headers = True
        self._seen_bytes = False
        self._raw_bytes = 0

    def on_response_complete(self) -> None:
        self._requests = max(0, self._requests - 1)
        if self._requests == 0 and not self._refused:
            self.slots.waiting(self)  # idle now (a pipelined request, if any, keeps it busy)
        super().on_response_complete()

    def _too_large(self) -> None:
        self.dropped("headers_too_large")
        self._refuse(
            431,
            f"the request line and headers are larger than this server's limit of {self.max_header_bytes} bytes",
            "request_header_fields_too_large",
        )

    def send_400_response(self, msg: str) -> None:
        if not self._refused:
            self.dropped("invalid_http")
            self._refuse(400, "the request is not valid HTTP/1.1", "invalid_http")
