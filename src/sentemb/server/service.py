"""The embedding service: one encoder, its micro-batcher, metrics, lifecycle and settings.

It lives on ``app.state.service``; the route handlers (:mod:`sentemb.server.routes`) read it from
there and hold no state of their own.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Hashable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from sentemb.config import LongText
from sentemb.encoder import EncodeResult
from sentemb.errors import ConfigError, InvalidTextError, TextTooLongError
from sentemb.export.recipe import CALIBRATION_FILE
from sentemb.prompts import DOCUMENT, QUERY, task_prompt_name
from sentemb.server import fastjson
from sentemb.server.batcher import BatcherClosed, MicroBatcher, QueueFull
from sentemb.server.errors import SERVER, ApiError, log_unexpected, shown
from sentemb.server.inputs import invalid_text
from sentemb.server.metrics import Metrics
from sentemb.server.settings import ServerSettings

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.requests import Request

    from sentemb.encoder import Encoder

log = logging.getLogger("sentemb.server")

# ~60 tokens of ordinary prose, timed 16 at a time at start-up
_TIMED_TEXT = (
    "A man is playing a guitar on a street corner while people walk by. The weather is lovely today, "
    "and the market is full of stalls selling bread, cheese and fresh fruit from the farms nearby."
)


# A request's ``input_type`` (OpenAI-style names and Cohere's) -> the task whose prompt and route it gets
INPUT_TYPES = {"query": "query", "search_query": "query", "document": "document", "search_document": "document"}


def input_task(input_type: str | None) -> str | None:
    """The task ("query" or "document") a request's ``input_type`` names (None when left out), or a 400."""
    if input_type is None:
        return None
    task = INPUT_TYPES.get(input_type)
    if task is None:
        accepted = ", ".join(f"'{name}'" for name in INPUT_TYPES)
        raise ApiError(400, f"'input_type' '{shown(input_type)}' is not one of {accepted}; send one of them or "
                       "leave it out", param="input_type", code="invalid_value")  # fmt: skip
    return task


def task_prompt(prompts: Mapping[str, str], prompt_name: str | None, task: str | None) -> str | None:
    """The prompt name a call uses: an explicit one wins (as in encode_query / encode_document), else the
    task's prompt ("query"; "document", "passage" or "corpus") when a task is given, else None (the default)."""
    if prompt_name is not None or task is None:
        return prompt_name
    return task_prompt_name(prompts, QUERY if task == "query" else DOCUMENT)


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


def served_names(model: str, given: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Names a client may send as ``model`` for the model loaded from ``model``: ``given``, else its id and
    short name (a local folder: its short name only, never the server's file paths); the first is the
    one the service answers with."""
    if given:
        return given
    short = PurePosixPath(model.replace("\\", "/").rstrip("/")).name or model
    if Path(model).expanduser().exists() or model.startswith((".", "/", "~")):
        return (short,)
    return tuple(dict.fromkeys([model, short]))


def special_tokens(encoder: Encoder) -> int:
    """Special tokens the tokenizer adds to each text (CLS and SEP: 2), to count the content embedded."""
    return int(encoder.tokenizer.num_special_tokens_to_add(False))


class EmbeddingService:
    """Everything one running service needs; ``start``/``stop`` are the app's lifespan."""

    def __init__(self, encoder: Encoder, settings: ServerSettings) -> None:
        if encoder.config.max_chars is None:  # the encoder cuts long texts; the server always caps them
            encoder = encoder.with_max_chars(settings.max_chars)
        self.encoder = encoder
        self.settings = settings
        self.names = served_names(encoder.config.model, settings.model_names)
        self.lifecycle = Lifecycle()
        self.long_text = encoder.config.long_text
        self.content_room = encoder.max_length - special_tokens(encoder)
        self.metrics = Metrics(lambda: self.batcher.queued_inputs, lambda: self.batcher.tokens_per_second)
        self.batcher = MicroBatcher(
            lambda texts, prompt: encoder.encode_with_info(texts, prompt=prompt, show_progress=False),
            self.estimate_tokens,
            queue_size=settings.queue_size,
            micro_batch_tokens=settings.micro_batch_tokens,
            max_wait_s=settings.max_wait_ms / 1000,
            concurrency=encoder.plan.streams,
            on_batch=self.metrics.on_batch,
            max_queue_seconds=settings.max_queue_seconds,
            batch_seconds=settings.batch_seconds,
        )
        self._warming: asyncio.Task[None] | None = None
        # The served model's vectors of the bundled calibration sentences: int8/uint8 output ranges.
        self.range_vectors: np.ndarray | None = None

    def estimate_tokens(self, text: str) -> int:
        """Tokens a text will cost before it is tokenised (about 4 characters a token)."""
        rough = min(len(text), self.encoder.config.max_chars or len(text)) // 4 + 2
        return rough if self.long_text is LongText.CHUNK else min(rough, self.encoder.max_length)

    def refuse_early(self, path: str, body: bytes, headers: Mapping[bytes, bytes]) -> ApiError | None:
        """The 429 of an embeddings request that the batcher would refuse, decided on its raw body before
        routing, validation and the checks of each text (under a flood of requests that will be refused,
        the refusal that costs the event loop least), or None: served, or left to the route (anything
        but a plain JSON body for this model whose ``input`` is a string or a list of strings within
        ``max_inputs``).
        While the model is idle nothing is refused, so nothing is parsed twice."""
        if path != "/v1/embeddings" or not self.batcher.busy:
            return None
        if headers.get(b"content-encoding", b"").strip() not in (b"", b"identity"):
            return None
        texts = _plain_texts(body, self.settings.max_inputs, self.names)
        if texts is None:
            return None
        try:
            self.batcher.admit(len(texts), sum(self.estimate_tokens(text) for text in texts))
        except QueueFull as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            return _busy(exc)
        return None

    async def start(self) -> None:
        self.batcher.start()
        self._warming = asyncio.create_task(self._warm_up())

    async def stop(self) -> None:
        self.lifecycle.drain()
        if self._warming is not None:
            await self._warming
        await self.batcher.close()

    async def _warm_up(self) -> None:
        try:
            await self.forward_pass("warm up")
            await self._measure_rate()
            texts = CALIBRATION_FILE.read_text(encoding="utf-8").splitlines()
            self.range_vectors = await self.batcher.run_in_model_thread(  # type: ignore[assignment]
                lambda: self.encoder.encode(texts, show_progress=False)
            )
        except Exception as exc:  # stay not-ready; the log says why (type and frames, no text)
            log_unexpected(exc)
            return
        if self.lifecycle.phase is Phase.STARTING:
            self.lifecycle.phase = Phase.READY
            log.info("model %s is ready (dim %d, %s)", self.names[0], self.encoder.dim, self.encoder.device)

    async def _measure_rate(self) -> None:
        """Time one batch of typical texts, so that admission starts from this machine's rate."""
        texts = [_TIMED_TEXT] * 16
        tokens = sum(self.estimate_tokens(text) for text in texts)
        await self.batcher.seed_rate(lambda: self.encoder.encode(texts, show_progress=False), tokens)

    async def forward_pass(self, text: str) -> None:
        """One real forward pass in the model thread, between micro-batches."""
        await self.batcher.run_in_model_thread(lambda: self.encoder.encode([text], show_progress=False))

    async def check_ready(self) -> None:
        """Raise a 503 unless the service is ready and the model answers in time."""
        phase = self.lifecycle.phase
        if phase is not Phase.READY:
            raise ApiError(503, f"the service is {phase.value}", kind=SERVER, code="not_ready")
        try:
            await asyncio.wait_for(self.forward_pass("ready"), self.settings.ready_timeout)
        except asyncio.TimeoutError:
            raise ApiError(503, "the model did not answer in time", kind=SERVER, code="not_ready") from None
        except Exception as exc:  # a model that cannot run is not ready, not a 500
            log_unexpected(exc)
            raise ApiError(503, "the model failed its forward pass", kind=SERVER, code="not_ready") from None

    def prompt(self, prompt_name: str | None, input_type: str | None = None) -> str:
        """The prompt text of a request's ``prompt_name`` and ``input_type`` (the prompt encode_query or
        encode_document would use; the model's default when both are None), or a 400."""
        prompt_name = task_prompt(self.encoder.prompts, prompt_name, input_task(input_type))
        try:
            return self.encoder.resolve_prompt(prompt_name=prompt_name)
        except ConfigError:  # its message quotes the whole name and suggests a library argument
            known = ", ".join(f"'{shown(name)}'" for name in self.encoder.prompts) or "none"
            raise ApiError(
                400,
                f"'prompt_name' '{shown(prompt_name or '')}' is not one of this model's prompts ({known}); "
                "send one of them or leave it out",
                param="prompt_name",
                code="invalid_value",
            ) from None

    async def encode(self, request: Request, texts: list[str], prompt: str = "") -> EncodeResult:
        """Queue ``texts`` (encoded after ``prompt``); if the client goes away first, drop them from the queue."""
        try:
            return await queued(request, self.batcher, self.metrics, texts, prompt)
        except InvalidTextError as exc:
            raise invalid_text(exc.index, exc.position) from None
        except TextTooLongError as exc:
            raise ApiError(
                400,
                f"input[{exc.index}] has {exc.num_tokens} tokens, more than this model takes "
                f"({self.encoder.max_length}); the server's long-text policy is 'error'",
                param="input",
                code="context_length_exceeded",
            ) from None


async def queued(
    request: Request, batcher: MicroBatcher, metrics: Metrics, items: list[Any], prompt: Hashable = ""
) -> EncodeResult:
    """Queue ``items`` on ``batcher`` and wait for their rows; if the client goes away first, drop them
    from the queue (499). A full queue is a 429 with Retry-After, a closing one a 503."""
    future = _submit(batcher, metrics, items, prompt)
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
    return future.result()


def _submit(
    batcher: MicroBatcher, metrics: Metrics, items: list[Any], prompt: Hashable
) -> asyncio.Future[EncodeResult]:
    try:
        return batcher.submit(items, prompt)
    except QueueFull as exc:
        metrics.rejected.labels(exc.reason).inc()
        raise _busy(exc) from None
    except BatcherClosed:
        metrics.rejected.labels("shutting_down").inc()
        raise ApiError(503, "the server is shutting down", kind=SERVER, code="shutting_down") from None


def _plain_texts(body: bytes, max_inputs: int, names: tuple[str, ...]) -> list[str] | None:
    """The texts of a JSON body for this model (``model`` one of ``names``, or none) whose ``input`` is a
    string or 1 to ``max_inputs`` strings, else None (another served model's request, or a bad one)."""
    try:
        data = fastjson.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("model") not in (None, *names):
        return None
    texts = data.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not 0 < len(texts) <= max_inputs:
        return None
    return texts if all(isinstance(text, str) for text in texts) else None


def _busy(exc: QueueFull) -> ApiError:
    return ApiError(
        429,
        f"the server is busy: {exc}; retry in {exc.retry_after}s",
        kind="rate_limit_error",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(exc.retry_after)},
    )


async def _until_disconnected(request: Request) -> None:
    """Returns when the client has gone away (the body is read by then, so only a disconnect arrives)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
