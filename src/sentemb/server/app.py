"""The FastAPI app: OpenAI-compatible ``/v1/embeddings`` over one :class:`Encoder`, through the micro-batcher."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from sentemb import __version__
from sentemb.config import LongText
from sentemb.encoder import check_unicode
from sentemb.errors import InvalidTextError, TextTooLongError
from sentemb.server.batcher import BatcherClosed, MicroBatcher, QueueFull, Rows
from sentemb.server.errors import SERVER, ApiError, install_error_handlers, log_unexpected
from sentemb.server.metrics import Metrics
from sentemb.server.middleware import Guard
from sentemb.server.schemas import EmbeddingRequest, EmbeddingResponse, ErrorBody, ModelList
from sentemb.server.settings import ServerSettings

if TYPE_CHECKING:
    from sentemb.encoder import Encoder

log = logging.getLogger("sentemb.server")

TRUNCATED_HEADER = "X-Truncated-Inputs"
_RENDER_INLINE_ROWS = 64  # larger responses are serialised in a worker thread
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 429, 503)}


class Phase(str, enum.Enum):
    STARTING = "starting"  # the model's first forward pass has not finished
    READY = "ready"
    DRAINING = "draining"  # shutting down: finish what is in flight, take no new traffic


class Lifecycle:
    """Where the service is; the runner flips it to DRAINING on SIGTERM."""

    def __init__(self) -> None:
        self.phase = Phase.STARTING
        self.started = int(time.time())

    def drain(self) -> None:
        self.phase = Phase.DRAINING


def served_names(encoder: Encoder, settings: ServerSettings) -> tuple[str, ...]:
    """Names a client may send as ``model``; the first is the one the service answers with."""
    if settings.model_names:
        return settings.model_names
    model = encoder.config.model
    short = PurePosixPath(model.replace("\\", "/").rstrip("/")).name or model
    if Path(model).expanduser().exists() or model.startswith((".", "/", "~")):
        return (short,)  # a local folder: never show clients the server's file paths
    return tuple(dict.fromkeys([model, short]))


def texts_from_input(value: object, max_inputs: int) -> list[str]:
    """The request's ``input`` as a list of non-empty strings, or a 400 that names the problem."""
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, list):
        items = value
        if not items:
            raise ApiError(
                400, "'input' is an empty array; send at least one string", param="input", code="empty_input"
            )
        if len(items) > max_inputs:
            raise ApiError(
                400,
                f"'input' has {len(items)} items; this server takes at most {max_inputs} per request",
                param="input",
                code="too_many_inputs",
            )
        if all(isinstance(x, int) and not isinstance(x, bool) for x in items) or any(
            isinstance(x, list) for x in items
        ):
            raise ApiError(
                400,
                "token id arrays are not supported; send the texts as strings",
                param="input",
                code="unsupported_input",
            )
    else:
        raise ApiError(400, "'input' must be a string or an array of strings", param="input", code="invalid_type")
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise ApiError(
                400, f"input[{index}] is {_json_type(item)}, not a string", param="input", code="invalid_type"
            )
        if not item:
            raise ApiError(400, f"input[{index}] is an empty string", param="input", code="empty_input")
    try:  # refused here, before it is queued beside other requests' texts
        check_unicode(items)  # type: ignore[arg-type]
    except InvalidTextError as exc:
        message = _invalid_text_message(exc.index, exc.position)
        raise ApiError(400, message, param="input", code="invalid_text") from None
    return items  # type: ignore[return-value]


def _invalid_text_message(index: int, position: int) -> str:
    return (
        f"input[{index}] is not valid Unicode: character {position} is a lone surrogate, which has no UTF-8 "
        "form; send the text as valid UTF-8"
    )


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", dict: "an object", list: "an array"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def cap_chars(texts: list[str], max_chars: int, long_text: LongText) -> tuple[list[str], list[bool]]:
    """Cut texts at ``max_chars`` before tokenising; with long_text='error' a longer text is a 400."""
    capped = [len(t) > max_chars for t in texts]
    if any(capped) and long_text is LongText.ERROR:
        index = capped.index(True)
        raise ApiError(
            400,
            f"input[{index}] has {len(texts[index])} characters; this server takes at most {max_chars}",
            param="input",
            code="context_length_exceeded",
        )
    return [t[:max_chars] if c else t for t, c in zip(texts, capped, strict=True)], capped


def format_vectors(vectors: np.ndarray, encoding: str, dimensions: int | None) -> list[Any]:
    """Rows as float lists or base64 of little-endian float32; ``dimensions`` keeps a prefix, re-normalised."""
    if dimensions is not None and dimensions < vectors.shape[1]:
        vectors = vectors[:, :dimensions]
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    if encoding == "base64":
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
    return vectors.tolist()


async def _until_disconnected(request: Request) -> None:
    """Returns when the client has gone away (the body is read by then, so only a disconnect arrives)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def create_app(encoder: Encoder, settings: ServerSettings | None = None) -> FastAPI:
    """The service for ``encoder``: same vectors as ``encoder.encode``, merged into micro-batches."""
    settings = settings or ServerSettings()
    names = served_names(encoder, settings)
    lifecycle = Lifecycle()
    long_text = encoder.config.long_text
    max_length = encoder.max_length

    def estimate_tokens(text: str) -> int:
        rough = len(text) // 4 + 2
        return rough if long_text is LongText.CHUNK else min(rough, max_length)

    def encode(texts: list[str]) -> tuple[np.ndarray, list[Any]]:
        result = encoder.encode_with_info(texts, show_progress=False)
        return result.embeddings, result.info

    metrics = Metrics(lambda: batcher.queued_inputs)
    batcher = MicroBatcher(
        encode,
        estimate_tokens,
        queue_size=settings.queue_size,
        token_budget=settings.token_budget,
        max_wait_s=settings.max_wait_ms / 1000,
        concurrency=encoder.parallel,
        on_batch=metrics.on_batch,
    )

    async def warm_up() -> None:
        try:
            await batcher.run_in_model_thread(lambda: encoder.encode(["warm up"], show_progress=False))
        except Exception as exc:  # stay not-ready; the log says why (type and frames, no text)
            log_unexpected(exc)
            return
        if lifecycle.phase is Phase.STARTING:
            lifecycle.phase = Phase.READY
            log.info("model %s is ready (dim %d, %s)", names[0], encoder.dim, encoder.device)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        warming = asyncio.create_task(warm_up())
        try:
            yield
        finally:
            lifecycle.drain()
            await warming
            await batcher.close()

    app = FastAPI(title="sentemb", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.lifecycle = lifecycle
    app.state.batcher = batcher
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(
        Guard,
        api_key=settings.api_key,
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        log_access=settings.access_log,
    )
    if settings.cors_origins:  # added last: outermost, so preflights and refusals carry CORS headers
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=[TRUNCATED_HEADER, "Retry-After"],
        )

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers. No model call."""
        return {"status": "ok"}

    @app.get("/ready", responses=_ERRORS)
    async def ready() -> dict[str, str]:
        """Readiness: a real forward pass; 503 while starting or draining."""
        if lifecycle.phase is not Phase.READY:
            raise ApiError(503, f"the service is {lifecycle.phase.value}", kind=SERVER, code="not_ready")
        try:
            await asyncio.wait_for(
                batcher.run_in_model_thread(lambda: encoder.encode(["ready"], show_progress=False)),
                settings.ready_timeout,
            )
        except asyncio.TimeoutError:
            raise ApiError(503, "the model did not answer in time", kind=SERVER, code="not_ready") from None
        except Exception as exc:  # a model that cannot run is not ready, not a 500
            log_unexpected(exc)
            raise ApiError(503, "the model failed its forward pass", kind=SERVER, code="not_ready") from None
        return {"status": "ready", "model": names[0]}

    @app.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_card(name, lifecycle.started) for name in names[:1]]}

    @app.get("/v1/models/{model_id:path}", responses=_ERRORS)
    async def model(model_id: str) -> dict[str, Any]:
        if model_id not in names:
            raise _unknown_model(model_id)
        return _card(model_id, lifecycle.started)

    @app.post("/v1/embeddings", response_model=EmbeddingResponse, responses=_ERRORS)
    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        """OpenAI-compatible embeddings. Header X-Truncated-Inputs counts the inputs cut to fit."""
        if body.model is not None and body.model not in names:
            raise _unknown_model(body.model)
        texts = texts_from_input(body.input, settings.max_inputs)
        if body.dimensions is not None and not 1 <= body.dimensions <= encoder.dim:
            raise ApiError(
                400,
                f"'dimensions' must be between 1 and {encoder.dim}, got {body.dimensions}",
                param="dimensions",
                code="invalid_value",
            )
        texts, capped = cap_chars(texts, settings.max_chars, long_text)
        rows = await _encode(request, texts)
        truncated = sum(1 for item, cut in zip(rows.info, capped, strict=True) if item.truncated or cut)
        tokens = sum(item.num_tokens for item in rows.info)
        metrics.inputs.inc(len(texts))
        metrics.tokens.inc(tokens)
        metrics.truncated.inc(truncated)
        headers = {TRUNCATED_HEADER: str(truncated)}
        if len(texts) <= _RENDER_INLINE_ROWS:
            return JSONResponse(render(rows.embeddings, body, tokens), headers=headers)
        # thousands of float rows take a while to print: keep the event loop free meanwhile
        payload = await asyncio.to_thread(render_bytes, rows.embeddings, body, tokens)
        return Response(payload, media_type="application/json", headers=headers)

    def render(embeddings: np.ndarray, body: EmbeddingRequest, tokens: int) -> dict[str, Any]:
        vectors = format_vectors(embeddings, body.encoding_format, body.dimensions)
        return {
            "object": "list",
            "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)],
            "model": names[0],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def render_bytes(embeddings: np.ndarray, body: EmbeddingRequest, tokens: int) -> bytes:
        return json.dumps(render(embeddings, body, tokens), separators=(",", ":")).encode()

    async def _encode(request: Request, texts: list[str]) -> Rows:
        """Queue ``texts``; if the client goes away first, drop them from the queue."""
        try:
            future = batcher.submit(texts)
        except QueueFull:
            metrics.rejected.labels("queue_full").inc()
            raise ApiError(
                429,
                "the server is busy: too many inputs are waiting; retry shortly",
                kind="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": "1"},
            ) from None
        except BatcherClosed:
            metrics.rejected.labels("shutting_down").inc()
            raise ApiError(503, "the server is shutting down", kind=SERVER, code="shutting_down") from None
        watcher = asyncio.ensure_future(_until_disconnected(request))
        try:
            await asyncio.wait((future, watcher), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            future.cancel()
            raise
        finally:
            watcher.cancel()
        if not future.done():  # nobody will read the answer (499 is nginx's name for this)
            future.cancel()
            metrics.rejected.labels("client_gone").inc()
            raise ApiError(499, "the client closed the request", code="client_closed_request")
        try:
            return future.result()
        except InvalidTextError as exc:
            raise ApiError(
                400, _invalid_text_message(exc.index, exc.position), param="input", code="invalid_text"
            ) from None
        except TextTooLongError as exc:
            raise ApiError(
                400,
                f"input[{exc.index}] has {exc.num_tokens} tokens, more than this model takes ({max_length}); "
                "the server's long-text policy is 'error'",
                param="input",
                code="context_length_exceeded",
            ) from None

    return app


def _card(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "sentemb"}


def _unknown_model(name: str) -> ApiError:
    return ApiError(
        404, f"the model '{name:.200}' does not exist; see GET /v1/models", param="model", code="model_not_found"
    )
