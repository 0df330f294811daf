"""Merge concurrent requests into micro-batches for one encoder, off the event loop.

    request ─ submit(texts) ─▶ queue (bounded in inputs; QueueFull past it)
                                  │  the worker takes jobs in order until the token budget is spent
                                  │  or max_wait has passed since the first one
                                  ▼
              one encode_with_info call in a model thread ─▶ each job gets its own rows
              (one thread per backend stream: the next micro-batch fills while the last one runs)

A job whose request went away (the awaiting task was cancelled) is dropped before it reaches the
model. One request never fails another: a text the encoder refuses (too long, not valid Unicode)
fails only the request that sent it, and when a merged call fails for any other reason its requests
are run again one by one, so that only the guilty one fails. ``close()`` refuses new work, finishes
what is queued and stops the worker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from sentemb.errors import InvalidTextError, TextTooLongError
from sentemb.tokenize import TextInfo

log = logging.getLogger("sentemb.server")


class QueueFull(Exception):
    """The queue holds too many inputs already; the caller should come back later."""


class BatcherClosed(Exception):
    """The batcher is shutting down and takes no new work."""


class ModelFailed(RuntimeError):
    """The model failed on this request's texts (run alone, so no other request caused it)."""


@dataclass(frozen=True)
class BatchReport:
    """What one micro-batch did (for metrics; never any text)."""

    requests: int
    inputs: int
    tokens: int
    seconds: float


@dataclass(frozen=True)
class Rows:
    """One request's share of a micro-batch: its vectors (n, dim) and per-text facts, in order."""

    embeddings: np.ndarray
    info: list[TextInfo]


@dataclass
class _Job:
    texts: list[str]
    tokens: int
    future: asyncio.Future[Rows]
    queued: bool = True
    enqueued_at: float = field(default_factory=time.perf_counter)


EncodeFn = Callable[[list[str]], tuple[np.ndarray, list[TextInfo]]]


class MicroBatcher:
    """Asyncio micro-batcher; create it inside the running loop and ``start()`` it."""

    def __init__(
        self,
        encode: EncodeFn,
        estimate_tokens: Callable[[str], int],
        *,
        queue_size: int,
        token_budget: int,
        max_wait_s: float,
        concurrency: int = 1,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> None:
        self._encode = encode
        self._estimate = estimate_tokens
        self._queue_size = queue_size
        self._budget = token_budget
        self._max_wait = max_wait_s
        self._on_batch = on_batch
        self._jobs: collections.deque[_Job] = collections.deque()
        self._queued_inputs = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        # Micro-batches in flight at once: more than one only for a backend that computes several
        # batches at once (OpenVINO's streams), so that one batch's tail never leaves a stream idle.
        self._concurrency = max(1, concurrency)
        self._executor = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="sentemb-model")
        self._worker: asyncio.Task[None] | None = None

    @property
    def queued_inputs(self) -> int:
        """Inputs waiting for the model (the queue depth)."""
        return self._queued_inputs

    @property
    def closing(self) -> bool:
        return self._closing

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="sentemb-batcher")

    async def run_in_model_thread(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` in the model thread, between micro-batches (used by /ready)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def encode(self, texts: Sequence[str]) -> Rows:
        """Vectors and facts for ``texts``; raises QueueFull, BatcherClosed or the encoder's error."""
        return await self.submit(texts)  # cancelling the caller cancels the future: the job is dropped

    def submit(self, texts: Sequence[str]) -> asyncio.Future[Rows]:
        """Queue ``texts`` and return the future of their rows (cancel it to drop the work)."""
        if self._closing:
            raise BatcherClosed("the server is shutting down")
        if self._queued_inputs + len(texts) > self._queue_size:
            raise QueueFull(f"{self._queued_inputs} inputs are queued already (limit {self._queue_size})")
        items = list(texts)
        future: asyncio.Future[Rows] = asyncio.get_running_loop().create_future()
        job = _Job(items, sum(self._estimate(t) for t in items), future)
        future.add_done_callback(functools.partial(self._forget_if_cancelled, job))
        self._jobs.append(job)
        self._queued_inputs += len(items)
        self._wakeup.set()
        return future

    async def close(self) -> None:
        """Take no new work, finish the queued jobs, stop the worker and the model thread."""
        self._closing = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
        self._executor.shutdown(wait=True)

    # -- the worker ------------------------------------------------------------------------------

    def _forget_if_cancelled(self, job: _Job, _future: object = None) -> None:
        if job.future.cancelled() and job.queued:
            job.queued = False
            self._queued_inputs -= len(job.texts)

    def _pop_live(self) -> _Job | None:
        """The oldest job whose request still waits (dropped ones are discarded on the way)."""
        while self._jobs:
            job = self._jobs[0]
            if job.queued:
                return job
            self._jobs.popleft()
        return None

    def _take(self) -> _Job:
        job = self._jobs.popleft()
        job.queued = False
        self._queued_inputs -= len(job.texts)
        return job

    async def _collect(self) -> list[_Job]:
        """Wait for a first job, then add jobs until the token budget or the maximum wait is reached."""
        loop = asyncio.get_running_loop()
        while self._pop_live() is None:
            if self._closing:
                return []
            self._wakeup.clear()
            await self._wakeup.wait()
        batch = [self._take()]
        tokens = batch[0].tokens
        deadline = loop.time() + self._max_wait
        while tokens < self._budget:
            job = self._pop_live()
            if job is None:
                remaining = deadline - loop.time()
                if remaining <= 0 or self._closing:
                    break
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                continue
            if tokens + job.tokens > self._budget:
                break
            batch.append(self._take())
            tokens += job.tokens
        return batch

    async def _run(self) -> None:
        """Collect a micro-batch whenever a model thread is free (so batches fill while others run)."""
        free = asyncio.Semaphore(self._concurrency)
        running: set[asyncio.Task[None]] = set()
        while True:
            await free.acquire()
            batch = await self._collect()
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

    async def _guarded(self, batch: list[_Job]) -> None:
        try:
            await self._process(batch)
        except Exception as exc:  # a bug of the batcher itself: fail what is left, never stop the worker
            _log_failure(exc, len(batch))
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(ModelFailed("the server failed on this request"))

    async def _process(self, batch: list[_Job]) -> None:
        """Encode the live jobs of ``batch`` together; a refused text fails only its own request, and
        any other failure of a merged call runs its requests again one at a time (isolation)."""
        loop = asyncio.get_running_loop()
        while batch:
            batch = [job for job in batch if not job.future.done()]
            if not batch:
                return
            texts = [text for job in batch for text in job.texts]
            started = time.perf_counter()
            try:
                vectors, info = await loop.run_in_executor(self._executor, self._encode, texts)
            except (TextTooLongError, InvalidTextError) as exc:
                owner, local = _owner(batch, exc.index)
                if not owner.future.done():
                    owner.future.set_exception(_for_request(exc, local))
                continue  # the others again, without the failed request
            except Exception as exc:
                if len(batch) == 1:
                    _log_failure(exc, 1)
                    batch[0].future.set_exception(ModelFailed("the model failed on this request's inputs"))
                    return
                for job in batch:  # which request caused it is unknown: each runs alone
                    await self._process([job])
                return
            seconds = time.perf_counter() - started
            start = 0
            for job in batch:
                end = start + len(job.texts)
                if not job.future.done():
                    job.future.set_result(Rows(vectors[start:end], info[start:end]))
                start = end
            if self._on_batch is not None:
                tokens = sum(item.num_tokens for item in info)
                self._on_batch(BatchReport(len(batch), len(texts), tokens, seconds))
            return


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


def _owner(batch: list[_Job], index: int) -> tuple[_Job, int]:
    """The job that holds text ``index`` of the merged batch, and the text's index in that job."""
    for job in batch:
        if index < len(job.texts):
            return job, index
        index -= len(job.texts)
    raise IndexError(index)
