"""STS evaluation: Spearman and Pearson correlation (x100) of cosine similarity with gold scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sentemb.errors import ConfigError

if TYPE_CHECKING:
    from sentemb.encoder import Encoder


@dataclass(frozen=True)
class StsResult:
    spearman: float
    pearson: float
    n: int
    cosine: np.ndarray  # predicted similarity per pair


@dataclass(frozen=True)
class StsData:
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]


def read_sts(path: str | Path) -> StsData:
    """Read the STS benchmark layout: tab separated genre, file, year, id, score, sentence1,
    sentence2 (extra trailing fields are ignored). Raises ConfigError (a ValueError) naming a bad line."""
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 7:
                raise ConfigError(f"{path}:{number}: expected at least 7 tab-separated fields, got {len(parts)}")
            try:
                scores.append(float(parts[4]))
            except ValueError:
                raise ConfigError(f"{path}:{number}: score {parts[4]!r} is not a number") from None
            s1.append(parts[5])
            s2.append(parts[6])
    return StsData(s1, s2, scores)


def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), dtype=np.float64)
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e - 1) / 2.0 + 1
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a @ b) / np.sqrt((a @ a) * (b @ b)))


def correlations(predicted: np.ndarray, gold: np.ndarray) -> tuple[float, float]:
    """(Spearman, Pearson) x100."""
    p = np.asarray(predicted, dtype=np.float64)
    g = np.asarray(gold, dtype=np.float64)
    return 100 * _pearson(_rank(p), _rank(g)), 100 * _pearson(p, g)


def evaluate_sts(
    encoder: Encoder, sentences1: Sequence[str], sentences2: Sequence[str], gold_scores: Sequence[float]
) -> StsResult:
    """Spearman and Pearson (x100) between cosine(s1, s2) and the gold scores."""
    if not (len(sentences1) == len(sentences2) == len(gold_scores)) or len(gold_scores) < 2:
        raise ConfigError("sentences1, sentences2 and gold_scores need the same length, at least 2")
    unique = list(dict.fromkeys([*sentences1, *sentences2]))
    vectors = encoder.encode(unique)
    row = {text: i for i, text in enumerate(unique)}
    a = vectors[[row[t] for t in sentences1]]
    b = vectors[[row[t] for t in sentences2]]
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    cosine = np.sum(a * b, axis=1)
    spearman, pearson = correlations(cosine, np.asarray(gold_scores))
    return StsResult(spearman, pearson, len(gold_scores), cosine)
