"""A request in the micro-batcher (:class:`Job`) and the part of it one micro-batch takes (:class:`Slice`)."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sentemb.encoder import EncodeResult


@dataclass(eq=False)
class Job:
    texts: list[Any]  # the inputs: texts, or (query, document) pairs
    costs: list[int]  # estimated tokens per text
    future: asyncio.Future[EncodeResult]
    prompt: Hashable = ""  # what the encode call gets besides the texts (a prompt; a service's call key):
    # only requests with the same one share a micro-batch
    admitted: float = 0.0  # when it was queued (time.perf_counter)
    predicted: float = 0.0  # the seconds it was predicted to take then: the delay by others, and its own work
    deadline: float = float("inf")  # when it should be answered (perf_counter)
    cursor: int = 0  # texts before this one have been taken into a micro-batch
    done_tokens: int = 0
    received: int = 0
    parts: list[tuple[int, EncodeResult]] = field(default_factory=list)
    tokens: int = field(init=False)  # the estimated tokens of all its texts (admission reads it per request)

    def __post_init__(self) -> None:
        self.tokens = sum(self.costs)

    @property
    def live(self) -> bool:
        return not self.future.done()

    @property
    def untaken(self) -> int:
        return len(self.texts) - self.cursor

    @property
    def remaining_tokens(self) -> int:
        return self.tokens - self.done_tokens

    def take(self, limit: int) -> int:
        """The end of the texts from the cursor on that fit ``limit`` tokens (the cursor itself: none fits)."""
        end, spent = self.cursor, 0
        while end < len(self.texts) and spent + self.costs[end] <= limit:
            spent += self.costs[end]
            end += 1
        return end

    def deliver(self, start: int, rows: EncodeResult) -> None:
        """Rows for texts ``start..``; the request's result once every slice is in."""
        self.parts.append((start, rows))
        self.received += len(rows.info)
        self.done_tokens += sum(self.costs[start : start + len(rows.info)])
        if self.received == len(self.texts) and self.live:
            self.parts.sort(key=lambda part: part[0])
            embeddings = np.concatenate([rows.embeddings for _, rows in self.parts])
            info = [item for _, rows in self.parts for item in rows.info]
            self.future.set_result(EncodeResult(embeddings, info))


@dataclass
class Slice:
    job: Job
    start: int
    end: int

    @property
    def texts(self) -> list[str]:
        return self.job.texts[self.start : self.end]

    @property
    def tokens(self) -> int:
        return sum(self.job.costs[self.start : self.end])
