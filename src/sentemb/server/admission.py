"""Admission by work: how fast the model goes, and how long a new request would wait.

Work is counted in estimated tokens. The rate is the model's served rate, all its streams together:
the tokens of each finished micro-batch over the time since the previous one finished (or since the
model became busy), a decaying, token-weighted mean (a few idle one-text batches do not drag it down),
starting from the batches the service times at start-up. Under a flood the HTTP work takes part of the
cores and the served rate falls with it, so admission sees the time the model really gets. The wait
is estimated as under processor sharing, which is what the batcher's round robin of slices
approximates: a request of ``s`` tokens is delayed by
``min(r, s)`` of each other request's remaining work ``r`` (its own work is its own: a large request
on an idle server is admitted, and a small one beside it is delayed by little). Under processor
sharing every request admitted later slows those admitted before it, so a request is also refused when
it would make one of them miss its deadline, or a late one later still (:func:`pushes_past_deadline`).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable

# Before the service has timed its first batch: a CPU-class guess (all-MiniLM-L6-v2 on 2 idle
# cores runs ~3,000 tokens/s). A prior weighs as one second of observations, so real batches replace it.
PRIOR_TOKENS_PER_SECOND = 2000.0
_PRIOR_SECONDS = 1.0
_DECAY = 0.8  # per observed micro-batch
# A micro-batch never plans for less than this (one long text, or a few dozen short ones).
MIN_BATCH_TOKENS = 256


class Throughput:
    """Estimated tokens per second the model serves (all its streams together)."""

    def __init__(self, prior: float = PRIOR_TOKENS_PER_SECOND) -> None:
        self._tokens = prior * _PRIOR_SECONDS
        self._seconds = _PRIOR_SECONDS

    def seed(self, tokens: int, seconds: float) -> None:
        """Replace the prior by one timed batch (the service's at start-up)."""
        self._tokens = tokens / max(seconds, 1e-6) * _PRIOR_SECONDS
        self._seconds = _PRIOR_SECONDS

    def observe(self, tokens: int, seconds: float) -> None:
        self._tokens = _DECAY * self._tokens + tokens
        self._seconds = _DECAY * self._seconds + max(seconds, 1e-6)

    @property
    def tokens_per_second(self) -> float:
        return self._tokens / self._seconds


def batch_budget(micro_batch_tokens: int, tokens_per_second: float, batch_seconds: float) -> int:
    """Tokens for the next micro-batch: about ``batch_seconds`` of model time, at most ``micro_batch_tokens``."""
    return max(1, min(micro_batch_tokens, max(MIN_BATCH_TOKENS, int(tokens_per_second * batch_seconds))))


# Requests admitted later share the model with this one too, so a request waits longer than the work in
# front of it at admission: by how much depends on the load. Under an open-loop flood it waited about
# twice that work (serve_overload.py: p50 1.6x, p90 3.7x the budget when counted once); behind closed-loop
# clients, which send again only when answered, about once. The factor is measured (Lateness) from
# this prior.
SUSTAINED_LOAD_FACTOR = 2.0
_LATENESS_RANGE = (1.0, 4.0)
# Only requests that met a queue of at least this share of the budget tell how queues grow (a lone
# request's wait is mostly fixed costs that its tiny predicted wait would inflate into a large factor)
LATENESS_MIN_SHARE = 0.2


class Lateness:
    """How much longer than predicted at admission requests really waited, recently (a decaying mean of
    observed / predicted, within 1-4x, from :data:`SUSTAINED_LOAD_FACTOR`): what admission multiplies
    the predicted wait by."""

    def __init__(self, prior: float = SUSTAINED_LOAD_FACTOR) -> None:
        self._sum, self._weight = prior, 1.0

    def observe(self, predicted: float, observed: float) -> None:
        ratio = min(max(observed / max(predicted, 1e-9), _LATENESS_RANGE[0]), _LATENESS_RANGE[1])
        self._sum = _DECAY * self._sum + ratio
        self._weight = _DECAY * self._weight + 1.0

    @property
    def factor(self) -> float:
        return self._sum / self._weight


def expected_wait(tokens: int, others: Iterable[int], tokens_per_second: float, factor: float = 2.0) -> float:
    """Seconds a new request of ``tokens`` is expected to wait beside requests with ``others`` tokens left,
    ``factor`` (:attr:`Lateness.factor`) times what they delay it by."""
    return factor * queue_delay(tokens, others, tokens_per_second)


def queue_delay(tokens: int, others: Iterable[int], tokens_per_second: float) -> float:
    """Seconds by which requests with ``others`` tokens left delay a new request of ``tokens``."""
    return sum(min(left, tokens) for left in others) / max(tokens_per_second, 1e-9)


def retry_after(wait: float, limit: float) -> int:
    """Whole seconds after which the same request would fit the latency budget (1 to 60)."""
    return min(60, max(1, math.ceil(wait - limit)))


def pushes_past_deadline(tokens: int, queued: Iterable[tuple[int, float]], tokens_per_second: float) -> bool:
    """Whether a new request of ``tokens`` would make a queued request miss its deadline (or a late one later).

    ``queued`` holds each queued request's (tokens left, seconds until its deadline). Under processor
    sharing a request with ``r`` tokens left finishes once ``min(r_i, r)`` of every queued request's work
    is done (its own ``r`` included); the new one adds ``min(tokens, r)`` to that. A request already
    late is protected too: each request admitted beside it would make it later still."""
    jobs = list(queued)
    left = sorted(r for r, _ in jobs)
    below = [0, *itertools.accumulate(left)]  # below[k]: the work of the k requests with the least left
    rate = max(tokens_per_second, 1e-9)
    for r, seconds in jobs:
        k = bisect.bisect_left(left, r)
        finish = (below[k] + r * (len(left) - k)) / rate
        if seconds < finish + min(tokens, r) / rate:
            return True
    return False
