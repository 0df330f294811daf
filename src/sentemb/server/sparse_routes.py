"""Sparse vector routes: text-embeddings-inference's ``POST /embed_sparse`` and OpenAI's ``/v1/embeddings``
when its ``model`` names a served sparse model (the embedding route hands such a request here)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from sentemb.server.errors import ApiError, shown
from sentemb.server.inputs import documents_from, read_request, texts_from_input
from sentemb.server.routes import TRUNCATED_HEADER, rerankers_of, service_of, unknown_model
from sentemb.server.schemas import EmbeddingRequest, EmbedSparseRequest, ErrorBody
from sentemb.server.sparse_service import SparseService, render_openai, sparse_named, sparse_of

router = APIRouter()
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 429, 503)}


def sparse_model(request: Request, name: str | None) -> SparseService:
    """The served sparse model called ``name`` (the first one when None), or an error naming what is served."""
    found = sparse_named(request, name)
    if found is not None:
        return found
    if not sparse_of(request):
        raise ApiError(404, "this server serves no sparse model; start it with --sparse-model MODEL", param="model",
                       code="model_not_found")  # fmt: skip
    if name in service_of(request).names:
        raise ApiError(400, f"'{shown(name or '', 200)}' is an embedding model: POST /v1/embeddings", param="model",
                       code="wrong_model_kind")  # fmt: skip
    if any(name in reranker.names for reranker in rerankers_of(request)):
        raise ApiError(400, f"'{shown(name or '', 200)}' is a reranker: POST /v1/rerank or /rerank", param="model",
                       code="wrong_model_kind")  # fmt: skip
    raise unknown_model(name or "")


@router.post("/embed_sparse", responses=_ERRORS)
async def embed_sparse(request: Request) -> list[list[dict[str, Any]]]:
    """text-embeddings-inference's sparse embeddings: per input, its non-zero ``{index, value}`` pairs (ids
    ascending); an input over the model's length is a 413 unless ``truncate`` (TEI's rule)."""
    settings = service_of(request).settings
    body = await read_request(request, EmbedSparseRequest, settings.max_body_bytes)
    sparse = sparse_model(request, body.model)
    texts = documents_from([body.inputs] if isinstance(body.inputs, str) else body.inputs, settings.max_inputs,
                           param="inputs")  # fmt: skip
    empty = next((i for i, text in enumerate(texts) if not text), None)
    if empty is not None:
        raise ApiError(400, f"inputs[{empty}] is an empty string", param="inputs", code="empty_input")
    rows = await sparse.encode(request, texts, body.prompt_name, body.input_type, route="/embed_sparse", param="inputs")
    if not body.truncate:
        cut = next((i for i, item in enumerate(rows.info) if item.truncated), None)
        if cut is not None:
            raise ApiError(413, f"inputs[{cut}] is longer than the model's {sparse.model.max_length} tokens; send "
                           "\"truncate\": true to cut it", param="inputs", code="context_length_exceeded")  # fmt: skip
    return [[{"index": i, "value": v} for i, v in zip(vec.indices.tolist(), vec.values.tolist(), strict=True)]
            for vec in rows.embeddings]  # fmt: skip


async def sparse_embeddings(request: Request, body: EmbeddingRequest, sparse: SparseService) -> Response:
    """``POST /v1/embeddings`` for a sparse model: ``{"object": "sparse_embedding", "indices", "values"}`` rows,
    under the embedding route's rules (input checks, limits, usage, the X-Truncated-Inputs header)."""
    texts = texts_from_input(body.input, service_of(request).settings.max_inputs)
    for field, value, plain in (("dimensions", body.dimensions, None), ("encoding_format", body.encoding_format,
                                "float"), ("embedding_type", body.embedding_type, "float")):  # fmt: skip
        if value != plain:
            raise ApiError(400, f"'{field}' does not apply to a sparse model's vectors (token ids and weights); "
                           "leave it out", param=field, code="invalid_value")  # fmt: skip
    rows = await sparse.encode(request, texts, body.prompt_name, body.input_type, route="/v1/embeddings", param="input")
    return JSONResponse(render_openai(rows, sparse.names[0]), headers={TRUNCATED_HEADER: str(rows.truncated)})
