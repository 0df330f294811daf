"""uvicorn's httptools protocol with the limits uvicorn lacks, and JSON refusals.

uvicorn has no timeout for reading a request (a connection that sends half a request line, or
headers then nothing, stays open for ever), no header size cap with httptools, and answers malformed
HTTP in plain text. Per connection, this protocol adds:

- a read deadline: ``read_timeout`` for the headers (from the connection's first byte or the end of
  the last response) and again for the body; past it 408 (or a silent close if nothing came);
- ``max_header_bytes`` for the request line and headers: 431;
- ``max_connections`` open at once: a connection past it is answered 503 and closed at once, so idle
  connections cannot use up the process's file descriptors;
- malformed HTTP answered in the JSON error shape (400).

Idle keep-alive connections are closed by uvicorn's own ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sentemb.server.errors import INVALID, SERVER, error_body
from sentemb.server.settings import ServerSettings

# A refused connection is half-closed and then given this long to read the answer and hang up.
_LINGER_SECONDS = 2.0


def raw_response(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response in the JSON error shape, closing the connection."""
    kind = SERVER if status >= 500 else INVALID
    body = json.dumps(error_body(message, kind, None, code)).encode()
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "content-type: application/json"]
    lines += [f"content-length: {len(body)}", "connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def guarded_protocol(settings: ServerSettings) -> type[HttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with ``settings``' limits."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedProtocol,),
        {
            "read_timeout": settings.read_timeout,
            "max_header_bytes": settings.max_header_bytes,
            "max_connections": settings.max_connections,
        },
    )


class GuardedProtocol(HttpToolsProtocol):
    read_timeout: float = 30.0
    max_header_bytes: int = 32 * 1024
    max_connections: int = 512

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._in_headers = True  # reading a request line and headers (not a body, not idle)
        self._raw_bytes = 0  # received while reading headers (catches one that never ends)
        self._header_bytes = 0  # request line and headers as parsed
        self._seen_bytes = False
        self._refused = False

    # -- deadlines -------------------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout, self._on_deadline)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if not self._seen_bytes or (cycle is not None and cycle.response_started):
            self.transport.close()  # nothing to answer to, or an answer is on its way already
            return
        part = "headers" if self._in_headers else "body"
        self._refuse(408, f"the request's {part} did not arrive within {self.read_timeout:g}s", "request_timeout")
        if cycle is not None:
            cycle.disconnected = True  # the app stops waiting for a body that will not come
            cycle.message_event.set()

    def _refuse(self, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
        """Answer now, stop reading requests, and hang up once the client has read the answer."""
        self._refused = True
        self._disarm()
        self.transport.write(raw_response(status, message, code, headers))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    # -- uvicorn's protocol, with the checks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(
                503,
                f"the server has {self.max_connections} connections open already; retry shortly",
                "too_many_connections",
                {"retry-after": "1"},
            )
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped until the client hangs up
        if self._in_headers:
            self._raw_bytes += len(data)
            if not self._seen_bytes:
                self._seen_bytes = True
                self._arm()  # after a keep-alive pause, the deadline counts from the first byte
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
        self._arm()  # the body's deadline
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

    def _too_large(self) -> None:
        self._refuse(
            431,
            f"the request line and headers are larger than this server's limit of {self.max_header_bytes} bytes",
            "request_header_fields_too_large",
        )

    def send_400_response(self, msg: str) -> None:
        if not self._refused:
            self._refuse(400, "the request is not valid HTTP/1.1", "invalid_http")
