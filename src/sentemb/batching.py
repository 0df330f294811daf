"""Length-sorted batch plans bounded by a token budget, padding, and order restoration; and the one
loop every model kind runs its inputs through (:func:`run_batches`)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenBatch:
    """A padded batch, the only thing a backend sees."""

    input_ids: np.ndarray  # (B, T) int64
    attention_mask: np.ndarray  # (B, T) int64
    token_type_ids: np.ndarray | None  # (B, T) int64, None for models whose tokenizer has none
    # (B,) leading positions of each row that pooling leaves out (a prompt with include_prompt=False)
    skip: np.ndarray | None = None

    @property
    def pool_mask(self) -> np.ndarray:
        """The mask pooling uses: the attention mask without each row's first ``skip`` positions."""
        if self.skip is None or not self.skip.any():
            return self.attention_mask
        positions = np.arange(self.attention_mask.shape[1])[None, :]
        return np.where(positions < self.skip[:, None], 0, self.attention_mask)

    def feed(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        """The arrays an exported graph takes, by input name (zeros for type ids the tokenizer lacks)."""
        types = self.token_type_ids if self.token_type_ids is not None else np.zeros_like(self.input_ids)
        arrays = {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "token_type_ids": types}
        return {name: arrays[name] for name in names}


# A batch closes early (once it has MIN_ROWS rows) rather than let padding pass this share of its real
# tokens: a server's micro-batch of mixed lengths then pads ~5%, not 20-40% (50-text calls measured
# 1.7x the sentences/s on torch, 3.7x on OpenVINO's padded graph).
MAX_PADDING = 0.05
MIN_ROWS = 8
# A packed graph (sentemb.export.packed) runs its linear layers on the real tokens only; padding costs
# it only attention, a small share on short texts, so its batches may pad this much: fewer, fuller
# batches (2 micro-batches of 75 mixed-length texts at once: 575 -> 643 sentences/s on OpenVINO; one
# call of 2,048 texts unchanged). Not at int8, whose vectors move with the padding (mean cosine to
# fp32 on STS dev: 0.9931 at 5%, 0.9899 at 50%).
PACKED_MAX_PADDING = 0.5


def max_padding(graph: str, int8: bool) -> float:
    """The padding a batch may carry on an export whose recipe's graph is ``graph``."""
    return PACKED_MAX_PADDING if graph == "packed" and not int8 else MAX_PADDING


def plan_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int, max_padding: float = MAX_PADDING
) -> list[np.ndarray]:
    """Group positions into batches, longest first, so that count <= batch_size,
    count * longest <= max_tokens (a single over-budget sequence gets a batch of its own) and
    padding stays under ``max_padding`` of the real tokens once a batch has MIN_ROWS rows."""
    sizes = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-sizes, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = max(int(sizes[order[start]]), 1)
        limit = min(len(order), start + max(1, min(batch_size, max_tokens // longest)))
        end, real = start + 1, longest
        while end < limit:
            n = int(sizes[order[end]])
            if end - start >= MIN_ROWS and longest * (end - start + 1) > (real + n) * (1 + max_padding):
                break
            real += n
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def pad(
    ids: Sequence[np.ndarray],
    type_ids: Sequence[np.ndarray],
    pad_id: int,
    with_types: bool,
    skip: np.ndarray | None = None,
) -> TokenBatch:
    """Right-pad sequences to the longest one; ``skip`` goes to :attr:`TokenBatch.skip`."""
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    width = int(lengths.max())
    # one boolean fill in row order instead of a row-by-row copy (a static model's batches are all overhead)
    real = np.arange(width)[None, :] < lengths[:, None]
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    input_ids[real] = np.concatenate(ids) if width else []
    types = np.zeros((len(ids), width), dtype=np.int64)
    if with_types:
        types[real] = np.concatenate(type_ids) if width else []
    return TokenBatch(input_ids, real.astype(np.int64), types if with_types else None, skip)


@dataclass(frozen=True)
class Inputs:
    """Tokenised model inputs and how to batch them: the part of a model kind's pipeline that is shared."""

    ids: Sequence[np.ndarray]
    type_ids: Sequence[np.ndarray]
    pad_id: int
    with_types: bool
    skip: np.ndarray | None = None  # (N,) leading positions pooling leaves out, per input


class StreamPool:
    """Threads that keep a backend's ``streams`` busy (batches computed at once, shared by concurrent
    calls), counting the batches submitted and not finished."""

    def __init__(self, streams: int) -> None:
        self.streams = streams
        self._executor = ThreadPoolExecutor(streams, thread_name_prefix="sentemb-forward")
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def idle(self) -> int:
        """Streams no batch waits for now."""
        return max(0, self.streams - self._in_flight)

    def submit(self, fn: Callable[[], None]) -> Future[None]:
        with self._lock:
            self._in_flight += 1
        future = self._executor.submit(fn)
        future.add_done_callback(self._done)
        return future

    def _done(self, _: Future[None]) -> None:
        with self._lock:
            self._in_flight -= 1


def stream_pool(streams: int) -> StreamPool | None:
    """The pool of a backend computing ``streams`` batches at once, or None for one batch at a time."""
    return StreamPool(streams) if streams > 1 else None


def spread(plan: list[np.ndarray], streams: int) -> list[np.ndarray]:
    """``plan`` with its largest batches halved until there are ``streams`` batches (or rows), so that a
    call finding streams idle runs on all of them: a lone call of 8 texts on OpenVINO's 2 streams took
    26 ms instead of 40 (one stream has a share of the cores). Halves stay length-sorted."""
    batches = list(plan)
    while len(batches) < streams:
        largest = max(range(len(batches)), key=lambda i: len(batches[i]))
        rows = batches[largest]
        if len(rows) < 2:
            break
        half = (len(rows) + 1) // 2
        batches[largest : largest + 1] = [rows[:half], rows[half:]]
    return batches


def run_batches(
    inputs: Inputs,
    run: Callable[[TokenBatch], np.ndarray],
    width: int,
    *,
    batch_size: int,
    max_tokens: int,
    pool: StreamPool | None = None,
    progress: Callable[[int], None] | None = None,
    max_padding: float = MAX_PADDING,
) -> np.ndarray:
    """``run`` (a backend's) over length-sorted, padded batches of ``inputs``: a (N, width) float32
    matrix in the inputs' order. With ``pool``, batches run at once (a backend's streams; a call that
    finds streams idle is spread over them); after an error, batches not started yet are dropped.
    ``progress`` is told each batch's size; ``max_padding`` is the backend's (what padding costs it)."""
    out = np.empty((len(inputs.ids), width), dtype=np.float32)

    def one(rows: np.ndarray) -> None:
        skip = None if inputs.skip is None else inputs.skip[rows]
        batch = pad([inputs.ids[r] for r in rows], [inputs.type_ids[r] for r in rows], inputs.pad_id,
                    inputs.with_types, skip)  # fmt: skip
        out[rows] = run(batch)
        if progress is not None:
            progress(len(rows))

    plan = plan_batches([len(ids) for ids in inputs.ids], batch_size, max_tokens, max_padding)
    if pool is not None:
        plan = spread(plan, pool.idle)
    if pool is None or len(plan) < 2:
        for rows in plan:
            one(rows)
        return out
    futures = [pool.submit(functools.partial(one, rows)) for rows in plan]
    try:
        for future in futures:
            future.result()
    finally:
        for future in futures:
            future.cancel()
    return out
