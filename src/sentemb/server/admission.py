"""Admission by work: how fast the model goes, and how long a new request would wait.

Work is counted in estimated tokens. The rate is measured from the micro-batches the model has run
(a decaying, token-weighted mean, so a few idle one-text batches do not drag it down), starting from
a prior until the first batches come back. The wait is estimated as under processor sharing, which is
what the batcher's round robin of slices approximates: a request of ``s`` tokens finishes after its own
work plus ``min(r, s)`` of each other request's remaining work ``r``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

# Before any micro-batch has run: a CPU-class guess (all-MiniLM-L6-v2 on 2 cores runs ~3,000 tokens/s);
# it weighs as one second of observations, so a few real batches replace it.
PRIOR_TOKENS_PER_SECOND = 2000.0
_PRIOR_SECONDS = 1.0
_DECAY = 0.8  # per observed micro-batch
# A micro-batch never plans for less than this (one long text, or a few dozen short ones).
MIN_BATCH_TOKENS = 256


class Throughput:
    """Estimated tokens per second of one model thread."""

    def __init__(self, prior: float = PRIOR_TOKENS_PER_SECOND) -> None:
        self._tokens = prior * _PRIOR_SECONDS
        self._seconds = _PRIOR_SECONDS

    def observe(self, tokens: int, seconds: float) -> None:
        self._tokens = _DECAY * self._tokens + tokens
        self._seconds = _DECAY * self._seconds + max(seconds, 1e-6)

    @property
    def tokens_per_second(self) -> float:
        return self._tokens / self._seconds


def batch_budget(token_budget: int, tokens_per_second: float, batch_seconds: float) -> int:
    """Tokens for the next micro-batch: about ``batch_seconds`` of model time, at most ``token_budget``."""
    return max(1, min(token_budget, max(MIN_BATCH_TOKENS, int(tokens_per_second * batch_seconds))))


def fair_wait(tokens: int, others: Iterable[int], tokens_per_second: float) -> float:
    """Seconds until a new request of ``tokens`` is done, beside requests with ``others`` tokens left."""
    work = tokens + sum(min(left, tokens) for left in others)
    return work / max(tokens_per_second, 1e-9)


def retry_after(wait: float, limit: float) -> int:
    """Whole seconds after which the same request would fit the latency budget (1 to 60)."""
    return min(60, max(1, math.ceil(wait - limit)))
