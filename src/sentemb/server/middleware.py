"""The outer ASGI guard: API key, body size, request metrics and an access log without query strings.

It runs before routing, so an unauthenticated or oversized request is refused before its body is read.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sentemb.server.errors import SERVER, ApiError, BodyTooLarge, error_response, internal_error, log_unexpected
from sentemb.server.metrics import Metrics

access_log = logging.getLogger("sentemb.server.access")

OPEN_PATHS = frozenset({"/health"})
# POST routes whose body the guard reads first, for ``early`` to refuse before routing (the body is then
# handed on to the route unchanged)
EARLY_PATHS = frozenset({"/v1/embeddings"})
Early = Callable[[str, bytes, Mapping[bytes, bytes]], "ApiError | None"]
ROUTES = frozenset({"/health", "/ready", "/metrics", "/v1/models", "/v1/embeddings", "/v1/rerank", "/v2/rerank",
                    "/rerank", "/tokenize", "/embed_sparse"})  # fmt: skip


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class Guard:
    """Pure ASGI middleware in front of the FastAPI app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        max_body_bytes: int,
        metrics: Metrics,
        shutting_down: Callable[[], bool],
        log_access: bool = True,
        early: Early | None = None,
    ) -> None:
        self.app = app
        self._shutting_down = shutting_down
        self._key = _digest(api_key.encode()) if api_key else None
        self._max_body = max_body_bytes
        self._metrics = metrics
        self._log_access = log_access
        self._early = early  # (path, body, headers) -> a refusal decided before routing, or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        status = 500
        response_started = False

        async def tracked_send(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                response_started = True
            await send(message)

        try:
            refusal = self._refusal(scope, path)
            limited = self._limited(receive)
            if refusal is None and self._reads_first(scope, path):
                refusal, limited = await self._read_first(scope, path, limited)
            if refusal is not None:
                await error_response(refusal)(scope, receive, tracked_send)
            else:
                await self.app(scope, limited, tracked_send)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when the shutdown timeout ends and would answer
            # a plain-text 500; this answers in the JSON shape, and the request's task ends there.
            if response_started or not self._shutting_down():
                raise
            await error_response(_CUT_AT_SHUTDOWN)(scope, receive, tracked_send)
        except Exception as exc:  # the last line of defence: answer 500 and log no request content
            log_unexpected(exc)
            if not response_started:
                await internal_error()(scope, receive, tracked_send)
        finally:
            seconds = time.perf_counter() - started
            route = path if path in ROUTES else "other"
            self._metrics.requests.labels(route, scope["method"], str(status)).inc()
            self._metrics.latency.labels(route).observe(seconds)
            if self._log_access:
                access_log.info("%s %s %d %.1fms", scope["method"], route, status, seconds * 1000)

    def _refusal(self, scope: Scope, path: str) -> ApiError | None:
        headers = dict(scope["headers"])
        if self._key is not None and path not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if not given:
                return _unauthorized("missing API key; send the header 'Authorization: Bearer <key>'")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(_digest(token.strip()), self._key):
                return _unauthorized("incorrect API key provided")
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return ApiError(400, "the Content-Length header is not a number", code="invalid_header")
            if size > self._max_body:
                return ApiError(
                    413,
                    f"the request body is {size} bytes, more than this server's limit of {self._max_body}",
                    code="request_too_large",
                )
        return None

    def _reads_first(self, scope: Scope, path: str) -> bool:
        """A POST to an early path whose size is known (and within the limit, or it was refused already)."""
        if self._early is None or path not in EARLY_PATHS or scope["method"] != "POST":
            return False
        return any(name == b"content-length" for name, _ in scope["headers"])

    async def _read_first(self, scope: Scope, path: str, receive: Receive) -> tuple[ApiError | None, Receive]:
        """Read the whole body (within the size limit), ask ``early`` about it, and return its answer with a
        ``receive`` that hands the same messages on, then the client's next ones (a disconnect)."""
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        refusal = None
        if messages[-1]["type"] == "http.request" and self._early is not None:
            body = b"".join(m.get("body", b"") for m in messages)
            refusal = self._early(path, body, dict(scope["headers"]))

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        return refusal, replay

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that stops a body (also a chunked one) at the size limit."""
        total = 0
        limit = self._max_body

        async def limited_receive() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > limit:
                    raise BodyTooLarge(limit)
            return message

        return limited_receive


_CUT_AT_SHUTDOWN = ApiError(
    503,
    "the server shut down before this request finished; send it again (to another instance if there is one)",
    kind=SERVER,
    code="shutting_down",
    headers={"Retry-After": "1", "Connection": "close"},
)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
