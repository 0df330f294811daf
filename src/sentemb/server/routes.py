"""Route handlers: module-level functions that read the :class:`EmbeddingService` from ``app.state``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from sentemb.server import fastjson
from sentemb.server.errors import ApiError, shown
from sentemb.server.inputs import (
    check_dimensions,
    embedded_tokens,
    format_vectors,
    read_request,
    refuse_over_max_chars,
    texts_from_input,
)
from sentemb.server.rerank_service import RerankService
from sentemb.server.schemas import EmbeddingRequest, EmbeddingResponse, ErrorBody, ModelList
from sentemb.server.service import EmbeddingService
from sentemb.server.sparse_service import sparse_named, sparse_of

TRUNCATED_HEADER = "X-Truncated-Inputs"
_RENDER_INLINE_ROWS = 64  # larger responses are serialised in a worker thread
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 413, 415, 429, 503)
}
_REQUEST_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": EmbeddingRequest.model_json_schema()}},
    }
}

router = APIRouter()
_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def _read(path: str, **options: Any) -> Callable[[_Handler], _Handler]:
    """A GET route that answers HEAD too (HEAD kept out of the OpenAPI schema: one operation per route)."""

    def register(handler: _Handler) -> _Handler:
        router.add_api_route(path, handler, methods=["HEAD"], include_in_schema=False, **options)
        return router.get(path, **options)(handler)

    return register


def service_of(request: Request) -> EmbeddingService:
    service: EmbeddingService = request.app.state.service
    return service


def rerankers_of(request: Request) -> list[RerankService]:
    rerankers: list[RerankService] = request.app.state.rerankers
    return rerankers


@_read("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers. No model call."""
    return {"status": "ok"}


@_read("/ready", responses=_ERRORS)
async def ready(request: Request) -> dict[str, str]:
    """Readiness: a real forward pass; 503 while starting or draining."""
    service = service_of(request)
    await service.check_ready()
    return {"status": "ready", "model": service.names[0]}


@_read("/metrics", response_class=Response)
async def prometheus(request: Request) -> Response:
    return Response(service_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


@_read("/v1/models", response_model=ModelList)
async def models(request: Request) -> dict[str, Any]:
    """Every served model (the embedding model, each reranker, each sparse model) with its kind and limits."""
    return {"object": "list", "data": [card for card, _ in _cards(request)]}


@_read("/v1/models/{model_id:path}", responses=_ERRORS)
async def model(model_id: str, request: Request) -> dict[str, Any]:
    for card, names in _cards(request):
        if model_id in names:
            return {**card, "id": model_id}
    raise unknown_model(model_id)


def _cards(request: Request) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    service = service_of(request)
    created, inputs = service.lifecycle.started, service.settings.max_inputs
    cards = [(_card(service.names[0], created, "embedding", service.encoder.max_length, inputs), service.names)]
    for reranker in rerankers_of(request):
        card = _card(reranker.names[0], created, "rerank", reranker.reranker.max_length, inputs)
        cards.append((card, reranker.names))
    for sparse in sparse_of(request):
        cards.append((_card(sparse.names[0], created, "sparse", sparse.model.max_length, inputs), sparse.names))
    return cards


@router.post("/v1/embeddings", response_model=EmbeddingResponse, responses=_ERRORS, openapi_extra=_REQUEST_SCHEMA)
async def embeddings(request: Request) -> Response:
    """OpenAI-compatible embeddings. Header X-Truncated-Inputs counts the inputs cut to fit."""
    service = service_of(request)
    settings = service.settings
    body = await read_request(request, EmbeddingRequest, settings.max_body_bytes)
    if body.model is not None and body.model not in service.names:
        sparse = sparse_named(request, body.model)
        if sparse is not None:  # sparse rows, same rules; sparse_routes imports this module, hence imported here
            from sentemb.server.sparse_routes import sparse_embeddings

            return await sparse_embeddings(request, body, sparse)
        if any(body.model in reranker.names for reranker in rerankers_of(request)):
            raise ApiError(400, f"'{shown(body.model, 200)}' is a reranker: POST /v1/rerank with a query and "
                           "documents", param="model", code="wrong_model_kind")  # fmt: skip
        raise unknown_model(body.model)
    texts = texts_from_input(body.input, settings.max_inputs)
    check_dimensions(body.dimensions, service.encoder.dim)
    prompt = service.prompt(body.prompt_name, body.input_type)
    refuse_over_max_chars(texts, service.encoder.config.max_chars, service.long_text)
    with service.metrics.in_flight.track_inprogress():
        result = await service.encode(request, texts, prompt)
    truncated = sum(1 for item in result.info if item.truncated)  # cut at max_chars or at max_length
    tokens = embedded_tokens(result.info, service.content_room)
    service.metrics.inputs.inc(len(texts))
    service.metrics.tokens.inc(tokens)
    service.metrics.truncated.inc(truncated)
    headers = {TRUNCATED_HEADER: str(truncated)}
    name = service.names[0]
    range_vectors = service.range_vectors
    if len(texts) <= _RENDER_INLINE_ROWS:
        payload = render_bytes(result.embeddings, body, tokens, name, range_vectors)
    else:  # thousands of float rows take a while to print: keep the event loop free meanwhile
        payload = await asyncio.to_thread(render_bytes, result.embeddings, body, tokens, name, range_vectors)
    return Response(payload, media_type="application/json", headers=headers)


def render(embeddings: Any, body: EmbeddingRequest, tokens: int, name: str, range_vectors: Any) -> dict[str, Any]:
    vectors = format_vectors(embeddings, body.encoding_format, body.dimensions, body.embedding_type, range_vectors)
    return {
        "object": "list",
        "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)],
        "model": name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def render_bytes(embeddings: Any, body: EmbeddingRequest, tokens: int, name: str, range_vectors: Any) -> bytes:
    return fastjson.dumps(render(embeddings, body, tokens, name, range_vectors))


def _card(name: str, created: int, kind: str, max_tokens: int, max_inputs: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "sentemb", "kind": kind,
            "max_input_tokens": max_tokens, "max_inputs": max_inputs}  # fmt: skip


def unknown_model(name: str) -> ApiError:
    return ApiError(
        404, f"the model '{shown(name, 200)}' does not exist; see GET /v1/models", param="model", code="model_not_found"
    )
