"""A served sparse (SPLADE) model: the embedding route's rules, with sparse vectors as the rows.

Each sparse model has a micro-batcher of its own (admission by the estimated tokens of a request's texts,
large requests sliced and interleaved, a refused text failing only its own request, a failed merged call
run again request by request), counters by model and route in the app's registry, and a warm-up that
seeds its measured rate. Requests share a micro-batch only when they ask for the same prompt name and
route (an ``input_type`` of "query" takes an inference-free model's query route, no forward pass).

The batcher joins rows with numpy, so a sparse vector travels through it as one object per row (its ids
and weights) and becomes :class:`~sentemb.sparse_vectors.SparseEmbeddings` again when the request's
rows are all in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from prometheus_client import Counter, Gauge

from sentemb.encoder import EncodeResult
from sentemb.errors import ConfigError, InvalidTextError, TextTooLongError
from sentemb.server.batcher import MicroBatcher
from sentemb.server.errors import ApiError, log_unexpected, shown
from sentemb.server.inputs import embedded_tokens, invalid_text
from sentemb.server.service import input_task, queued, served_names, task_prompt
from sentemb.sparse_vectors import SparseEmbeddings

if TYPE_CHECKING:
    from starlette.requests import Request

    from sentemb.server.metrics import Metrics
    from sentemb.server.settings import ServerSettings
    from sentemb.sparse import SparseEncoder
    from sentemb.tokenize import TextInfo

log = logging.getLogger("sentemb.server")

_WARM_TEXT = ("A man is playing a guitar on a street corner while people walk by; the market is full of stalls "
              "selling bread, cheese and fresh fruit from the farms nearby.")  # fmt: skip


class SparseMetrics:
    """The sparse models' counters (one set for every sparse model of an app, labelled by model and route)."""

    def __init__(self, metrics: Metrics) -> None:
        labels = ["model", "route"]
        self.base = metrics
        self.inputs = Counter("sentemb_sparse_inputs", "Texts encoded by a sparse model", labels,
                              registry=metrics.registry)  # fmt: skip
        self.tokens = Counter("sentemb_sparse_tokens", "Tokens in the texts a sparse model encoded", labels,
                              registry=metrics.registry)  # fmt: skip
        self.truncated = Counter("sentemb_sparse_truncated_inputs", "Texts a sparse model cut to fit", labels,
                                 registry=metrics.registry)  # fmt: skip
        self.queue = Gauge("sentemb_sparse_queue_inputs", "Texts waiting for a sparse model", ["model"],
                           registry=metrics.registry)  # fmt: skip
        self.weights = Counter("sentemb_sparse_weights", "Non-zero weights returned by a sparse model", labels,
                               registry=metrics.registry)  # fmt: skip


@dataclass(frozen=True)
class SparseRows:
    """A request's sparse vectors, what happened to each text, and the tokens ``usage`` reports."""

    embeddings: SparseEmbeddings
    info: list[TextInfo]
    tokens: int

    @property
    def truncated(self) -> int:
        return sum(1 for item in self.info if item.truncated)


class SparseCall(NamedTuple):
    """How a request's texts are encoded; requests share a micro-batch only when it is the same."""

    route: str | None  # an inference-free model's "query" or "document" route (None: its default)
    prompt_name: str | None  # None: the model's default prompt


class SparseService:
    """One served sparse model: its names, micro-batcher and warm-up; started and stopped with the app."""

    def __init__(self, model: SparseEncoder, settings: ServerSettings, metrics: SparseMetrics) -> None:
        if model.config.max_chars is None:  # the server always caps texts, as for embeddings
            model = model.with_max_chars(settings.max_chars)
        self.model = model
        self.names = served_names(model.config.model)
        self.metrics = metrics
        self.ready = False
        self.content_room = model.max_length - int(model.tokenizer.num_special_tokens_to_add(False))
        self.batcher = MicroBatcher(
            self._rows,
            self.estimate_tokens,
            queue_size=settings.queue_size,
            micro_batch_tokens=settings.micro_batch_tokens,
            max_wait_s=settings.max_wait_ms / 1000,
            concurrency=model.plan.streams,
            on_batch=metrics.base.on_batch,
            max_queue_seconds=settings.max_queue_seconds,
            batch_seconds=settings.batch_seconds,
        )
        self._warming: asyncio.Task[None] | None = None
        metrics.queue.labels(self.names[0]).set_function(lambda: self.batcher.queued_inputs)

    def _rows(self, texts: list[str], call: SparseCall) -> EncodeResult:
        """The model call of one micro-batch (see :meth:`_call`): a row object (ids, weights) per text."""
        result = self.model.encode_with_info(texts, prompt_name=call.prompt_name, route=call.route)
        rows = np.empty(len(texts), dtype=object)
        for i, vector in enumerate(result.embeddings):
            rows[i] = (vector.indices, vector.values)
        return EncodeResult(rows, list(result.info))

    def estimate_tokens(self, text: str) -> int:
        """Tokens a text will cost before it is tokenised (about 4 characters a token, cut at max_length)."""
        cap = self.model.config.max_chars or len(text)
        return min(min(len(text), cap) // 4 + 2, self.model.max_length)

    async def start(self) -> None:
        self.batcher.start()
        self._warming = asyncio.create_task(self._warm_up())

    async def stop(self) -> None:
        if self._warming is not None:
            await self._warming
        await self.batcher.close()

    async def _warm_up(self) -> None:
        """One batch of typical texts: the first forward pass, and the rate admission starts from."""
        texts = [_WARM_TEXT] * 16
        started = time.perf_counter()
        try:
            await self.batcher.run_in_model_thread(lambda: self._rows(texts, SparseCall(None, None)))
        except Exception as exc:  # stay not-ready; the log says why (type and frames, no text)
            log_unexpected(exc)
            return
        self.batcher.throughput.seed(sum(map(self.estimate_tokens, texts)), time.perf_counter() - started)
        self.ready = True
        log.info("sparse model %s is ready (vocabulary %d, %s)", self.names[0], self.model.dim, self.model.device)

    def _call(self, name: str | None, input_type: str | None) -> SparseCall:
        """The route and prompt name of a request's ``prompt_name`` and ``input_type`` (None: the model's
        default) as encode_query / encode_document choose them, or a 400 naming the field."""
        task = input_task(input_type)
        name = task_prompt(self.model.prompts, name, task)
        if name is None:
            return SparseCall(task, None)
        try:
            self.model.resolve_prompt(prompt_name=name)
        except ConfigError:
            known = ", ".join(f"'{shown(p)}'" for p in self.model.prompts) or "none"
            raise ApiError(
                400,
                f"'prompt_name' '{shown(name)}' is not one of this model's prompts ({known}); "
                "send one of them or leave it out",
                param="prompt_name",
                code="invalid_value",
            ) from None
        return SparseCall(task, name)

    async def encode(
        self,
        request: Request,
        texts: list[str],
        prompt_name: str | None,
        input_type: str | None,
        *,
        route: str,
        param: str,
    ) -> SparseRows:
        """Queue ``texts`` (checked at the HTTP boundary) to be encoded as the request's ``prompt_name`` and
        ``input_type`` say, and wait for their vectors; counts them by route."""
        call = self._call(prompt_name, input_type)
        try:
            result = await queued(request, self.batcher, self.metrics.base, texts, call)
        except InvalidTextError as exc:
            raise _named(invalid_text(exc.index, exc.position), param) from None
        except TextTooLongError as exc:  # the model's long_text='error'
            raise ApiError(400, f"{param}[{exc.index}] has {exc.num_tokens} tokens, more than this model takes "
                           f"({self.model.max_length}); the server's long-text policy is 'error'", param=param,
                           code="context_length_exceeded") from None  # fmt: skip
        rows = SparseEmbeddings.from_rows(list(result.embeddings), self.model.dim)
        done = SparseRows(rows, list(result.info), embedded_tokens(result.info, self.content_room))
        labels = (self.names[0], route)
        self.metrics.inputs.labels(*labels).inc(len(texts))
        self.metrics.tokens.labels(*labels).inc(done.tokens)
        self.metrics.truncated.labels(*labels).inc(done.truncated)
        self.metrics.weights.labels(*labels).inc(len(rows.values))
        return done


def _named(error: ApiError, param: str) -> ApiError:
    """The same refusal, naming the request's own field (TEI's ``inputs``, OpenAI's ``input``)."""
    if param == "input":
        return error
    error.message = error.message.replace("input[", f"{param}[", 1)
    error.param = param
    return error


def sparse_services(models: Sequence[SparseEncoder], settings: ServerSettings, metrics: Metrics) -> list[SparseService]:
    """A service per sparse model, sharing one set of counters in the app's registry."""
    if not models:
        return []
    shared = SparseMetrics(metrics)
    return [SparseService(model, settings, shared) for model in models]


def sparse_of(request: Request) -> list[SparseService]:
    """The app's sparse services (none when it serves no sparse model)."""
    served: list[SparseService] = getattr(request.app.state, "sparse", [])
    return served


def sparse_named(request: Request, name: str | None) -> SparseService | None:
    """The sparse service ``name`` (the first one when None), or None when no sparse model has that name."""
    served = sparse_of(request)
    if name is None:
        return served[0] if served else None
    return next((service for service in served if name in service.names), None)


def render_openai(rows: SparseRows, name: str) -> dict[str, Any]:
    """``/v1/embeddings``' answer with sparse vectors: ``{"object": "sparse_embedding", "indices", "values"}``."""
    data = [{"object": "sparse_embedding", "index": i, "indices": v.indices.tolist(), "values": v.values.tolist()}
            for i, v in enumerate(rows.embeddings)]  # fmt: skip
    usage = {"prompt_tokens": rows.tokens, "total_tokens": rows.tokens}
    return {"object": "list", "data": data, "model": name, "usage": usage}
