"""A served cross-encoder: the same rules as the embedding model, with a (query, document) pair as the input.

Each reranker has a micro-batcher of its own (a pair is one input; admission counts a request's pairs'
estimated tokens, so a 100-document rerank is 100 pairs of work; large requests are sliced and
interleaved with small ones), and raw logits come back from the model thread: each route applies the
model's activation, or none for TEI's ``raw_scores``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sentemb.encoder import EncodeResult
from sentemb.errors import ConfigError
from sentemb.rerank import activate
from sentemb.server.batcher import MicroBatcher
from sentemb.server.errors import log_unexpected
from sentemb.server.service import queued, served_names

if TYPE_CHECKING:
    from starlette.requests import Request

    from sentemb.rerank import Reranker
    from sentemb.server.metrics import Metrics
    from sentemb.server.settings import ServerSettings

log = logging.getLogger("sentemb.server")

_WARM_PAIRS = [("what does the market sell?", "The market is full of stalls selling bread, cheese and fresh fruit "
                "from the farms nearby, and a man is playing a guitar on the corner.")] * 16  # fmt: skip


class RerankService:
    """One served cross-encoder: its names, micro-batcher and warm-up; started and stopped with the app."""

    def __init__(self, reranker: Reranker, settings: ServerSettings, metrics: Metrics) -> None:
        if reranker.labels != 1:
            raise ConfigError(f"{reranker.config.model} gives {reranker.labels} scores per pair; the rerank routes "
                              "serve one-label (relevance) cross-encoders")  # fmt: skip
        if reranker.config.max_chars is None:  # the server always caps texts, as for embeddings
            reranker = reranker.with_max_chars(settings.max_chars)
        self.reranker = reranker
        self.names = served_names(reranker.config.model)
        self.metrics = metrics
        self.ready = False
        self.batcher = MicroBatcher(
            self._logits,
            self.estimate_tokens,
            queue_size=settings.queue_size,
            micro_batch_tokens=settings.micro_batch_tokens,
            max_wait_s=settings.max_wait_ms / 1000,
            concurrency=reranker.plan.streams,
            on_batch=metrics.on_batch,
            max_queue_seconds=settings.max_queue_seconds,
            batch_seconds=settings.batch_seconds,
        )
        self._warming: asyncio.Task[None] | None = None

    def _logits(self, pairs: list[tuple[str, str]], _prompt: str) -> EncodeResult:
        result = self.reranker.predict_with_info(pairs, activation="identity", show_progress=False)
        return EncodeResult(result.scores.reshape(len(pairs), -1), result.info)

    def estimate_tokens(self, pair: tuple[str, str]) -> int:
        """Tokens a pair will cost before it is tokenised (about 4 characters a token, cut at max_length)."""
        cap = self.reranker.config.max_chars or 0
        rough = (min(len(pair[0]), cap) + min(len(pair[1]), cap)) // 4 + 3
        return min(rough, self.reranker.max_length)

    async def start(self) -> None:
        self.batcher.start()
        self._warming = asyncio.create_task(self._warm_up())

    async def stop(self) -> None:
        if self._warming is not None:
            await self._warming
        await self.batcher.close()

    async def _warm_up(self) -> None:
        """One batch of typical pairs: the first forward pass, and the rate admission starts from."""
        started = time.perf_counter()
        try:
            await self.batcher.run_in_model_thread(lambda: self._logits(_WARM_PAIRS, ""))
        except Exception as exc:  # stay not-ready; the log says why (type and frames, no text)
            log_unexpected(exc)
            return
        tokens = sum(self.estimate_tokens(pair) for pair in _WARM_PAIRS)
        self.batcher.throughput.seed(tokens, time.perf_counter() - started)
        self.ready = True
        log.info("reranker %s is ready (%d labels, %s)", self.names[0], self.reranker.labels, self.reranker.device)

    async def score(
        self, request: Request, query: str, documents: list[str], *, top_n: int | None = None, raw: bool = False
    ) -> Scored:
        """The documents' scores against ``query`` (the model's activation unless ``raw``). An int8 reranker
        with a rescorer re-scores in fp32, on the model thread, those that could be in the best ``top_n``."""
        pairs = [(query, document) for document in documents]  # checked at the HTTP boundary
        result = await queued(request, self.batcher, self.metrics, pairs)
        logits = np.asarray(result.embeddings, dtype=np.float32).reshape(len(pairs))
        rescorer = self.reranker.rescorer
        if rescorer is not None and pairs:
            logits = np.asarray(await self.batcher.run_in_model_thread(lambda: rescorer.rescore(pairs, logits, top_n)))
        scores = activate(logits.reshape(-1, 1), "identity" if raw else self.reranker.activation, False)
        self.metrics.rerank_pairs.labels(self.names[0]).inc(len(pairs))
        return Scored(scores.reshape(len(pairs)), result.info, self.reranker.max_length)


@dataclass(frozen=True)
class Scored:
    """A request's scores, what happened to each pair, and the model's max length."""

    scores: np.ndarray
    info: list[Any]
    max_length: int

    def order(self, top_n: int | None) -> list[int]:
        """Document indices, best first (ties keep the documents' order), at most ``top_n``."""
        return [int(i) for i in np.argsort(-self.scores, kind="stable")[: top_n or len(self.scores)]]

    @property
    def tokens(self) -> int:
        """Tokens the model read: each pair's, cut at the max length (special tokens left out, as for embeddings)."""
        return sum(min(item.num_tokens, self.max_length) for item in self.info)
