"""Merge concurrent requests into micro-batches for one encoder, off the event loop.

    request ─ submit(texts) ─▶ admission: refused at once (QueueFull, with a retry delay) when the
                                  │  request would wait longer than max_queue_seconds, would make one
                                  │  admitted before it miss its deadline, or past queue_size
                                  ▼
                     turns: one entry per request, round robin
                                  │  the worker takes a slice (a few texts) of each request in turn
                                  │  until the micro-batch's token budget is spent or max_wait has passed
                                  │  (max_wait only while other batches run: an idle model never waits)
                                  ▼
              one encode_with_info call in a model thread ─▶ each request gets its rows back,
              (one thread per backend stream)                  reassembled in order once all slices are in

A large request is split into slices, so a one-sentence request sent meanwhile waits for about one
micro-batch (``batch_seconds`` of model time), not for its 400-text neighbour. A job whose request went
away (its future was cancelled) is dropped before it reaches the model. One request never fails
another: a text the encoder refuses (too long, not valid Unicode) fails only the request that sent it,
and when a merged call fails for any other reason its requests are run again one by one, so that
only the guilty one fails. ``close()`` refuses new work, finishes what is queued and stops the worker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sentemb.encoder import EncodeResult
from sentemb.errors import InvalidTextError, TextTooLongError
from sentemb.server.admission import (
    LATENESS_MIN_SHARE,
    Lateness,
    Throughput,
    batch_budget,
    pushes_past_deadline,
    queue_delay,
    retry_after,
)
from sentemb.server.jobs import Job, Slice

log = logging.getLogger("sentemb.server")


class QueueFull(Exception):
    """The request would wait too long (or too many inputs are queued); retry after ``retry_after`` s."""

    def __init__(self, message: str, *, retry_after: int, reason: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.reason = reason  # "overloaded" (latency budget) or "queue_full" (input count)


class BatcherClosed(Exception):
    """The batcher is shutting down and takes no new work."""


class ModelFailed(RuntimeError):
    """The model failed on this request's texts (run alone, so no other request caused it)."""


@dataclass(frozen=True)
class BatchReport:
    """What one micro-batch did (for metrics; never any text). ``tokens`` are estimated tokens."""

    requests: int
    inputs: int
    tokens: int
    seconds: float


EncodeFn = Callable[[list[Any], Any], EncodeResult]  # (inputs: texts or pairs, Job.prompt) -> a row per input


class MicroBatcher:
    """Asyncio micro-batcher; create it inside the running loop and ``start()`` it.

    ``max_queue_seconds`` (None: no limit) refuses a request that would wait longer at the measured
    rate; ``batch_seconds`` (None: ``micro_batch_tokens`` only) sizes micro-batches by model time.
    """

    def __init__(
        self,
        encode: EncodeFn,
        estimate_tokens: Callable[[Any], int],
        *,
        queue_size: int,
        micro_batch_tokens: int,
        max_wait_s: float,
        concurrency: int = 1,
        on_batch: Callable[[BatchReport], None] | None = None,
        max_queue_seconds: float | None = None,
        batch_seconds: float | None = None,
        throughput: Throughput | None = None,
    ) -> None:
        self._encode = encode
        self._estimate = estimate_tokens
        self._queue_size = queue_size
        self._budget = micro_batch_tokens
        self._max_wait = max_wait_s
        self._on_batch = on_batch
        self._max_queue_seconds = max_queue_seconds
        self._batch_seconds = batch_seconds
        self.throughput = throughput or Throughput()
        self.lateness = Lateness()
        self._turns: collections.deque[Job] = collections.deque()
        self._active: set[Job] = set()  # submitted and not finished (queued or in the model)
        self._wakeup = asyncio.Event()
        self._closing = False
        # Micro-batches in flight at once: the plan's streams (the batches the backend computes at once:
        # OpenVINO's streams, ONNX Runtime's runs on the CPU), so that one batch's tail never leaves a
        # stream idle.
        self._concurrency = max(1, concurrency)
        self._executor = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="sentemb-model")
        self._worker: asyncio.Task[None] | None = None
        self._in_model = 0  # micro-batches in a model thread now
        self._mark = 0.0  # when the last one finished, or when the model last became busy

    @property
    def queued_inputs(self) -> int:
        """Inputs waiting for the model (the queue depth)."""
        return sum(job.untaken for job in self._active if job.live)

    @property
    def busy(self) -> bool:
        """Some request is queued or in the model."""
        return bool(self._active)

    @property
    def tokens_per_second(self) -> float:
        """The measured rate of all model threads together: tokens served per second the model was busy."""
        return self.throughput.tokens_per_second

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="sentemb-batcher")

    async def run_in_model_thread(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` in the model thread, between micro-batches (used by /ready)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def seed_rate(self, run: Callable[[], object], tokens: int) -> None:
        """Time ``run`` (a typical batch of ``tokens`` estimated tokens) on every model thread at once, and
        start the served rate from it (one batch alone would time one stream, or a backend's lone-batch path)."""
        started = time.perf_counter()
        await asyncio.gather(*(self.run_in_model_thread(run) for _ in range(self._concurrency)))
        self.throughput.seed(tokens * self._concurrency, time.perf_counter() - started)

    def submit(self, texts: Sequence[Any], prompt: Hashable = "") -> asyncio.Future[EncodeResult]:
        """Queue ``texts`` (to be encoded after ``prompt``) and return the future of their rows (cancel it
        to drop the work)."""
        if self._closing:
            raise BatcherClosed("the server is shutting down")
        items = list(texts)
        costs = [self._estimate(t) for t in items]
        tokens = sum(costs)
        delay = self.admit(len(items), tokens)
        future: asyncio.Future[EncodeResult] = asyncio.get_running_loop().create_future()
        own = tokens / max(self.tokens_per_second, 1e-9)
        now, budget = time.perf_counter(), self._max_queue_seconds
        margin = 2 * (self._batch_seconds or 0.0)  # the batches it waits for beyond processor sharing's estimate
        due = own + max(budget - margin, budget / 2) if budget is not None else float("inf")
        job = Job(items, costs, future, prompt, admitted=now, predicted=delay + own, deadline=now + due)
        self._active.add(job)
        future.add_done_callback(lambda _f: self._finished(job, delay))
        self._turns.append(job)
        self._wakeup.set()
        return future

    def admit(self, inputs: int, tokens: int) -> float:
        """Raise QueueFull if a request of ``inputs`` texts and ``tokens`` estimated tokens would be refused now;
        else return the seconds by which the work admitted before it delays it."""
        now = time.perf_counter()
        queued = [(job.remaining_tokens, job.deadline - now) for job in self._active if job.live]
        delay = queue_delay(tokens, (left for left, _ in queued), self.tokens_per_second)
        wait = self.lateness.factor * delay  # the work admitted after it too, as measured lately
        limit = self._max_queue_seconds
        waiting = self.queued_inputs
        if waiting + inputs > self._queue_size:
            raise QueueFull(
                f"{waiting} inputs are queued already (limit {self._queue_size})",
                retry_after=retry_after(wait, limit or 0.0),
                reason="queue_full",
            )
        if limit is not None and wait > limit:
            raise QueueFull(
                f"this request would wait about {wait:.1f}s, more than the limit of {limit:g}s",
                retry_after=retry_after(wait, limit),
                reason="overloaded",
            )
        if limit is not None and pushes_past_deadline(tokens, queued, self.tokens_per_second):
            raise QueueFull(
                f"this request would make a request admitted before it wait more than the limit of {limit:g}s",
                retry_after=1,
                reason="overloaded",
            )
        return delay

    def _finished(self, job: Job, delay: float) -> None:
        """Forget ``job``; if it met a queue, compare its wait with the prediction (admission's factor)."""
        self._active.discard(job)
        limit = self._max_queue_seconds
        if job.future.cancelled() or job.future.exception() is not None or limit is None:
            return
        if delay >= LATENESS_MIN_SHARE * limit:
            self.lateness.observe(job.predicted, time.perf_counter() - job.admitted)

    async def close(self) -> None:
        """Take no new work, finish the queued jobs, stop the worker and the model thread."""
        self._closing = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
        self._executor.shutdown(wait=True)

    # -- the worker ------------------------------------------------------------------------------

    def _head(self, prompt: Hashable | None = None) -> Job | None:
        """The request whose turn it is (finished and dropped ones are discarded on the way); with
        ``prompt``, the first in turn whose prompt is that one (others wait for a batch of their own)."""
        while self._turns:
            job = self._turns[0]
            if job.live and job.untaken:
                break
            self._turns.popleft()
        return next((job for job in self._turns if job.live and job.untaken and prompt in (None, job.prompt)), None)

    def _current_budget(self) -> int:
        if self._batch_seconds is None:
            return self._budget
        per_stream = self.throughput.tokens_per_second / self._concurrency  # a batch shares the cores
        return batch_budget(self._budget, per_stream, self._batch_seconds)

    async def _collect(self, busy: Callable[[], bool]) -> list[Slice]:
        """Wait for a first request, then take slices in turn until the budget is reached, and, when ``busy()``
        says other batches are running as that request arrives, until the maximum wait has passed too. An
        idle model never waits: waiting would only add to the request's latency, and whatever arrives
        meanwhile goes to the next free stream. (Asked once the first request is in, not when collecting
        starts: that is while the previous batch runs, and a lone request would wait for nothing.)"""
        loop = asyncio.get_running_loop()
        while self._head() is None:
            if self._closing:
                return []
            self._wakeup.clear()
            await self._wakeup.wait()
        budget = self._current_budget()
        picked: dict[Job, Slice] = {}  # one slice per request: its texts taken in this batch are contiguous
        tokens = 0
        deadline = loop.time() + (self._max_wait if busy() else 0.0)
        while tokens < budget:
            job = self._head(next(iter(picked)).prompt if picked else None)
            if job is None:
                remaining = deadline - loop.time()
                if remaining <= 0 or self._closing:
                    break
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                continue
            room = budget - tokens
            share = max(1, budget // len(self._turns))  # a fair share of the batch per request and turn
            end = job.take(min(room, share))
            if end == job.cursor:  # its next text is larger than a share: that one text, if it fits at all
                end = job.cursor + 1 if job.costs[job.cursor] <= room or not picked else job.cursor
                if end == job.cursor:
                    break
            start, job.cursor = job.cursor, end
            tokens += sum(job.costs[start:end])
            if job in picked:
                picked[job].end = end
            else:
                picked[job] = Slice(job, start, end)
            self._turns.remove(job)
            if job.untaken:
                self._turns.append(job)  # back of the line: the others take their turn first
        return list(picked.values())

    async def _run(self) -> None:
        """Collect a micro-batch whenever a model thread is free (so batches fill while others run)."""
        free = asyncio.Semaphore(self._concurrency)
        running: set[asyncio.Task[None]] = set()
        while True:
            await free.acquire()
            batch = await self._collect(lambda: bool(running))
            if not batch:
                break
            task = asyncio.get_running_loop().create_task(self._guarded(batch))
            running.add(task)

            def finished(done: asyncio.Task[None]) -> None:
                running.discard(done)
                free.release()

            task.add_done_callback(finished)
        if running:
            await asyncio.gather(*running)

    async def _guarded(self, batch: list[Slice]) -> None:
        try:
            await self._process(batch)
        except Exception as exc:  # a bug of the batcher itself: fail what is left, never stop the worker
            _log_failure(exc, len(batch))
            for piece in batch:
                if piece.job.live:
                    piece.job.future.set_exception(ModelFailed("the server failed on this request"))

    async def _process(self, batch: list[Slice]) -> None:
        """Encode the live slices of ``batch`` together; a refused text fails only its own request, and
        any other failure of a merged call runs its requests again one at a time (isolation)."""
        loop = asyncio.get_running_loop()
        while batch:
            batch = [piece for piece in batch if piece.job.live]
            if not batch:
                return
            texts = [text for piece in batch for text in piece.texts]
            started = time.perf_counter()
            self._model_started()
            try:
                result = await loop.run_in_executor(self._executor, self._encode, texts, batch[0].job.prompt)
            except (TextTooLongError, InvalidTextError) as exc:
                self._model_finished(0)
                owner, local = _owner(batch, exc.index)
                if owner.job.live:
                    owner.job.future.set_exception(_for_request(exc, local))
                continue  # the others again, without the failed request
            except Exception as exc:
                self._model_finished(0)
                if len(batch) == 1:
                    _log_failure(exc, 1)
                    batch[0].job.future.set_exception(ModelFailed("the model failed on this request's inputs"))
                    return
                for piece in batch:  # which request caused it is unknown: each runs alone
                    await self._process([piece])
                return
            self._deliver(batch, result, time.perf_counter() - started)
            return

    def _model_started(self) -> None:
        if not self._in_model:
            self._mark = time.perf_counter()  # the model was idle: its busy time starts now
        self._in_model += 1

    def _model_finished(self, tokens: int) -> None:
        """Count ``tokens`` served in the time since the previous batch finished (or the model became busy):
        the served rate of all streams together, whatever their number or their share of the cores (the
        HTTP work takes some of them under a flood, and a batch alone gets more)."""
        now = time.perf_counter()
        self._in_model -= 1
        if tokens:
            self.throughput.observe(tokens, now - self._mark)
        self._mark = now

    def _deliver(self, batch: list[Slice], result: EncodeResult, seconds: float) -> None:
        tokens = sum(piece.tokens for piece in batch)
        self._model_finished(tokens)
        start = 0
        for piece in batch:
            end = start + piece.end - piece.start
            piece.job.deliver(piece.start, EncodeResult(result.embeddings[start:end], result.info[start:end]))
            start = end
        if self._on_batch is not None:
            self._on_batch(BatchReport(len(batch), start, tokens, seconds))


def _log_failure(exc: BaseException, requests: int) -> None:
    """Type and frames only: an exception's message may quote a text."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("a model call for %d request(s) failed: %s\n%s", requests, type(exc).__name__, frames)


def _for_request(exc: TextTooLongError | InvalidTextError, local: int) -> Exception:
    """The same refusal, indexed by the text's position in its own request (no text quoted)."""
    if isinstance(exc, TextTooLongError):
        return TextTooLongError(
            f"input {local} has {exc.num_tokens} tokens, more than max_length allows", local, exc.num_tokens
        )
    return InvalidTextError(f"input {local} is not valid Unicode at character {exc.position}", local, exc.position)


def _owner(batch: list[Slice], index: int) -> tuple[Slice, int]:
    """The slice that holds text ``index`` of the merged call, and the text's index in its request."""
    for piece in batch:
        size = piece.end - piece.start
        if index < size:
            return piece, piece.start + index
        index -= size
    raise IndexError(index)
