"""Rerank and tokenize routes, in the shapes the clients already speak: Cohere's and Jina's
``/v1/rerank`` and ``/v2/rerank``, text-embeddings-inference's ``/rerank`` and ``/tokenize``."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request

from sentemb.server.errors import ApiError, shown
from sentemb.server.inputs import documents_from, read_request, unicode_text
from sentemb.server.rerank_service import RerankService, Scored
from sentemb.server.routes import rerankers_of, service_of, unknown_model
from sentemb.server.schemas import ErrorBody, RerankRequest, RerankResponse, TeiRerankRequest, TokenizeRequest
from sentemb.server.sparse_service import sparse_named

router = APIRouter()
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 429, 503)}


def _reranker(request: Request, name: str | None) -> RerankService:
    """The served reranker called ``name`` (the first one when None), or a 404 naming what is served."""
    rerankers = rerankers_of(request)
    if not rerankers:
        raise ApiError(404, "this server serves no reranker; start it with --reranker MODEL", param="model",
                       code="model_not_found")  # fmt: skip
    if name is None:
        return rerankers[0]
    for reranker in rerankers:
        if name in reranker.names:
            return reranker
    if name in service_of(request).names:
        raise ApiError(400, f"'{shown(name, 200)}' is an embedding model: POST /v1/embeddings", param="model",
                       code="wrong_model_kind")  # fmt: skip
    if sparse_named(request, name) is not None:
        raise ApiError(400, f"'{shown(name, 200)}' is a sparse model: POST /embed_sparse or /v1/embeddings",
                       param="model", code="wrong_model_kind")  # fmt: skip
    raise unknown_model(name)


async def _cohere(request: Request, version: str) -> dict[str, Any]:
    settings = service_of(request).settings
    body = await read_request(request, RerankRequest, settings.max_body_bytes)
    reranker = _reranker(request, body.model)
    documents = documents_from(body.documents, settings.max_inputs)
    if body.top_n is not None and body.top_n < 1:
        raise ApiError(400, f"'top_n' must be at least 1, got {body.top_n}", param="top_n", code="invalid_value")
    scored = await reranker.score(request, unicode_text(body.query, "query", "query"), documents, top_n=body.top_n)
    results = [
        {"index": i, "relevance_score": float(scored.scores[i]),
         **({"document": {"text": documents[i]}} if body.return_documents else {})}
        for i in scored.order(body.top_n)
    ]  # fmt: skip
    usage = {"prompt_tokens": scored.tokens, "total_tokens": scored.tokens}
    meta = {"api_version": {"version": version}, "billed_units": {"search_units": 1}}
    return {"id": str(uuid.uuid4()), "model": reranker.names[0], "results": results, "usage": usage, "meta": meta}


@router.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True, responses=_ERRORS)
async def rerank_v1(request: Request) -> dict[str, Any]:
    """Cohere's (and Jina's) rerank: documents scored against the query, best first."""
    return await _cohere(request, "1")


@router.post("/v2/rerank", response_model=RerankResponse, response_model_exclude_none=True, responses=_ERRORS)
async def rerank_v2(request: Request) -> dict[str, Any]:
    """Cohere's rerank, v2 (the same body and answer)."""
    return await _cohere(request, "2")


@router.post("/rerank", responses=_ERRORS)
async def rerank_tei(request: Request) -> list[dict[str, Any]]:
    """text-embeddings-inference's rerank: ``[{index, score, text?}]`` best first; a pair over the model's
    length is a 413 unless ``truncate`` (TEI's rule); ``raw_scores`` skips the activation."""
    settings = service_of(request).settings
    body = await read_request(request, TeiRerankRequest, settings.max_body_bytes)
    reranker = _reranker(request, body.model)
    texts = documents_from(body.texts, settings.max_inputs, param="texts")
    query = unicode_text(body.query, "query", "query")
    scored: Scored = await reranker.score(request, query, texts, raw=body.raw_scores)
    if not body.truncate:
        cut = next((i for i, item in enumerate(scored.info) if item.truncated), None)
        if cut is not None:
            raise ApiError(413, f"texts[{cut}] with the query is longer than the model's {scored.max_length} "
                           "tokens; send \"truncate\": true to cut it", param="texts",
                           code="context_length_exceeded")  # fmt: skip
    return [{"index": i, "score": float(scored.scores[i]), **({"text": texts[i]} if body.return_text else {})}
            for i in scored.order(None)]  # fmt: skip


@router.post("/tokenize", responses=_ERRORS)
async def tokenize(request: Request) -> list[list[dict[str, Any]]]:
    """text-embeddings-inference's tokenize: each input's tokens (id, text, special, start, stop) as the
    served model (``model``: the embedding model unless a reranker is named) reads them; without special
    tokens, the counts are what ``usage`` reports for texts that fit."""
    service = service_of(request)
    body = await read_request(request, TokenizeRequest, service.settings.max_body_bytes)
    sparse = sparse_named(request, body.model) if body.model is not None else None
    if body.model is None or body.model in service.names:
        tokenizer, lowercase = service.encoder.tokenizer, service.encoder.spec.lowercase
    elif sparse is not None:
        tokenizer, lowercase = sparse.model.tokenizer, sparse.model.spec.lowercase
    else:
        reranker = _reranker(request, body.model).reranker
        tokenizer, lowercase = reranker.tokenizer, reranker.spec.lowercase
    inputs = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    texts = documents_from(inputs, service.settings.max_inputs, param="inputs")
    cap = service.encoder.config.max_chars or service.settings.max_chars
    out = []
    for whole in texts:
        text = whole[:cap]
        encoding = tokenizer.encode(text.lower() if lowercase else text, add_special_tokens=body.add_special_tokens)
        out.append([
            {"id": token_id, "text": token if special else text[start:stop], "special": bool(special),
             "start": None if special else start, "stop": None if special else stop}
            for token_id, token, special, (start, stop)
            in zip(encoding.ids, encoding.tokens, encoding.special_tokens_mask, encoding.offsets, strict=True)
        ])  # fmt: skip
    return out
