"""Every error the service answers, in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("sentemb.server")

INVALID = "invalid_request_error"
SERVER = "server_error"

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    431: "request_header_fields_too_large",
}


class ApiError(Exception):
    """An answer other than 200, raised anywhere in a route and turned into OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = INVALID,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = kind  # OpenAI's field name
        self.param = param
        self.code = code
        self.headers = headers or {}


class BodyTooLarge(StarletteHTTPException):
    """Raised while reading a body past the limit (FastAPI passes HTTPExceptions through)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than this server's limit of {limit} bytes")


def shown(value: str, limit: int = 100) -> str:
    """A client's string made safe to quote in a message or a log line: at most ``limit`` characters
    (then "..."), each one that is not printable (NUL, controls, line breaks, lone surrogates, which
    have no UTF-8 form) written as its Python escape, e.g. ``\\ud800``."""
    cut = value[:limit]
    safe = "".join(char if char.isprintable() else ascii(char)[1:-1] for char in cut)
    return safe + ("..." if len(value) > limit else "")


class ErrorResponse(JSONResponse):
    """JSON written as ASCII: an error body can always be sent, whatever a message quotes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(error: ApiError) -> JSONResponse:
    return ErrorResponse(
        error_body(error.message, error.type, error.param, error.code), status_code=error.status, headers=error.headers
    )


def validation_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    """A message and param from the first error; never the offending value (it may be a text)."""
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = loc[0] if loc else None
    where = shown(".".join(loc), 200) if loc else "body"
    if first.get("type") == "missing":
        return f"'{where}' is required", param
    if not loc and first.get("type") in ("model_attributes_type", "dict_type"):
        return "the request body must be a JSON object", None
    return f"'{where}': {shown(str(first.get('msg', 'invalid value')), 200)}", param


async def _on_api_error(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, ApiError):  # pragma: no cover - registered for ApiError only
        raise exc
    return error_response(exc)


async def _on_validation(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):  # pragma: no cover
        raise exc
    message, param = validation_message(exc.errors())
    return error_response(ApiError(400, message, param=param, code="invalid_value"))


async def _on_http(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover
        raise exc
    status = exc.status_code
    type_ = SERVER if status >= 500 else INVALID
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if status == 404:
        message = "no such route; see GET /v1/models and POST /v1/embeddings"
    return error_response(
        ApiError(status, message, kind=type_, code=_HTTP_CODES.get(status), headers=dict(exc.headers or {}))
    )


def log_unexpected(exc: BaseException) -> None:
    """Log a failure by type and frames only: an exception's message may quote a request text."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected %s while handling a request\n%s", type(exc).__name__, frames)


def internal_error() -> JSONResponse:
    return error_response(ApiError(500, "the server failed on this request", kind=SERVER, code="internal_error"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
