"""The FastAPI app: OpenAI-compatible ``/v1/embeddings`` over one :class:`Encoder`, through the micro-batcher."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from sentemb import __version__
from sentemb.server.errors import install_error_handlers
from sentemb.server.middleware import Guard
from sentemb.server.rerank_routes import router as rerank_router
from sentemb.server.rerank_service import RerankService
from sentemb.server.routes import TRUNCATED_HEADER, router
from sentemb.server.service import EmbeddingService, Phase
from sentemb.server.settings import ServerSettings
from sentemb.server.sparse_routes import router as sparse_router
from sentemb.server.sparse_service import SparseService, sparse_services

if TYPE_CHECKING:
    from sentemb.encoder import Encoder
    from sentemb.rerank import Reranker
    from sentemb.sparse import SparseEncoder

__all__ = ["create_app"]


def create_app(
    encoder: Encoder, settings: ServerSettings | None = None, rerankers: Sequence[Reranker] = (),
    sparse_models: Sequence[SparseEncoder] = (),
) -> FastAPI:  # fmt: skip
    """The service for ``encoder`` (same vectors as ``encoder.encode``, merged into micro-batches), for
    each of ``rerankers`` (the scores of ``Reranker.predict``) and each of ``sparse_models`` (the vectors of
    ``SparseEncoder.encode``), in one process."""
    service = EmbeddingService(encoder, settings or ServerSettings())
    scorers = [RerankService(reranker, service.settings, service.metrics) for reranker in rerankers]
    sparse = sparse_services(sparse_models, service.settings, service.metrics)
    served: list[RerankService | SparseService] = [*scorers, *sparse]  # started and stopped with the app

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        for reranker in served:
            await reranker.start()
        try:
            yield
        finally:
            await service.stop()
            for reranker in served:
                await reranker.stop()

    app = FastAPI(title="sentemb", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service = service
    app.state.rerankers = scorers
    app.state.sparse = sparse
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(rerank_router)
    app.include_router(sparse_router)
    app.add_middleware(
        Guard,
        api_key=service.settings.api_key,
        max_body_bytes=service.settings.max_body_bytes,
        metrics=service.metrics,
        shutting_down=lambda: service.lifecycle.phase is Phase.DRAINING,
        log_access=service.settings.access_log,
        early=service.refuse_early,
    )
    if service.settings.cors_origins:  # added last: outermost, so preflights and refusals carry CORS headers
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(service.settings.cors_origins),
            allow_methods=["GET", "HEAD", "POST"],
            allow_headers=["Authorization", "Content-Type", "Content-Encoding"],
            expose_headers=[TRUNCATED_HEADER, "Retry-After"],
        )
    return app
