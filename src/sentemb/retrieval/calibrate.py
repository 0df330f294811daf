"""int8/uint8 output ranges from calibration sentences encoded by the same encoder (as the server does).

The library path stays ``sentemb.quantize(enc.encode(texts), "int8", ranges=calibration_ranges(enc)[0])``;
``Encoder.encode`` always returns float32. ``sentemb batch`` reads the texts once on the driver
(:func:`read_calibration`) and each actor measures the ranges on them (:func:`ranges_from_texts`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from sentemb.errors import ConfigError
from sentemb.retrieval.quantize import quantization_ranges


def read_calibration(path: str | Path | None = None) -> tuple[list[str], dict[str, Any]]:
    """(texts, where they came from): the bundled sentences, or one text per non-blank line of ``path``."""
    from sentemb.export.recipe import CALIBRATION_FILE

    source = Path(path) if path is not None else CALIBRATION_FILE
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the calibration file ({exc.strerror or exc})") from None
    texts = [line for line in raw.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if len(texts) < 2:
        raise ConfigError(f"{source}: give at least 2 calibration texts (one per line; a few hundred is plenty)")
    where = {"calibration": "bundled" if path is None else str(path), "calibration_texts": len(texts),
             "calibration_sha256": hashlib.sha256(raw).hexdigest()}  # fmt: skip
    return texts, where


def ranges_from_texts(encoder: Any, texts: list[str], prompt: str = "") -> np.ndarray:
    """Ranges of shape (2, dim): per-dimension min and max of ``encoder``'s vectors of ``texts``."""
    return quantization_ranges(encoder.encode(texts, prompt=prompt))


def calibration_ranges(encoder: Any, path: str | Path | None = None, prompt: str = "") -> tuple[np.ndarray, dict]:
    """(ranges of shape (2, dim), where they came from): the bundled sentences, or one text per line of ``path``."""
    texts, where = read_calibration(path)
    return ranges_from_texts(encoder, texts, prompt), where
