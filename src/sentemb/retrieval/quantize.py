"""Quantised *output* vectors: float32 embeddings stored as int8, uint8 or packed bits.

This is about the stored/returned vectors, not the compute precision of the forward pass (that is
``EncoderConfig.precision``). The arithmetic copies sentence-transformers' ``quantize_embeddings``
step for step, so both libraries give the same bytes for the same inputs (tested against it):

- ``int8`` / ``uint8``: per dimension, ``(x - min) / ((max - min) / 255)`` floored and clipped to
  0..255 (``int8`` subtracts 128). min/max (``ranges``, shape (2, dim)) come from ``ranges``, else
  from ``calibration`` vectors, else from the vectors themselves. Keep the ranges to quantise
  queries and later batches the same way (``quantization_ranges``).
- ``binary`` / ``ubinary``: one bit per dimension (``x > 0``), packed 8 per byte, big-endian bit
  order (``numpy.packbits``); ``binary`` stores each byte minus 128 as int8. A 384-d vector becomes
  48 bytes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from sentemb.errors import ConfigError

OutputType = Literal["float32", "int8", "uint8", "binary", "ubinary"]
OUTPUT_TYPES: tuple[str, ...] = ("float32", "int8", "uint8", "binary", "ubinary")
NUMPY_DTYPES = {"float32": np.float32, "int8": np.int8, "uint8": np.uint8, "binary": np.int8, "ubinary": np.uint8}


def check_output_type(output: str) -> str:
    if output not in OUTPUT_TYPES:
        raise ConfigError(f"output type {output!r} is unknown; choose one of {', '.join(OUTPUT_TYPES)}")
    return output


def quantization_ranges(calibration: np.ndarray) -> np.ndarray:
    """Per-dimension (min, max) of ``calibration`` as a float32 array of shape (2, dim)."""
    values = np.asarray(calibration)
    if values.ndim == 1 or len(values) < 2:
        raise ConfigError(
            "int8/uint8 ranges cannot come from a single vector; pass ranges= or calibration= with "
            "a representative sample of vectors (a few thousand is plenty)"
        )
    return np.vstack((np.min(values, axis=0), np.max(values, axis=0))).astype(np.float32)


def quantize(
    vectors: np.ndarray,
    output: str,
    *,
    ranges: np.ndarray | None = None,
    calibration: np.ndarray | None = None,
) -> np.ndarray:
    """``vectors`` (float, shape (n, dim) or (dim,)) as the ``output`` type, packed like sentence-transformers.

    ``output`` is one of ``float32``, ``int8``, ``uint8``, ``binary``, ``ubinary``; ``ranges`` and
    ``calibration`` only matter for ``int8``/``uint8``. The input is never modified.
    """
    check_output_type(output)
    values = np.asarray(vectors)
    if values.dtype.kind not in "f":
        raise ConfigError(f"quantize takes float vectors, not {values.dtype}; they are quantised already")
    if values.ndim not in (1, 2):
        raise ConfigError(f"quantize takes a vector or a 2-D array of vectors, not shape {values.shape}")
    if values.ndim == 2 and len(values) == 0:
        width = values.shape[1] if output.endswith("int8") else (values.shape[1] + 7) // 8
        return np.zeros((0, width if output != "float32" else values.shape[1]), dtype=NUMPY_DTYPES[output])
    if output == "float32":
        return values.astype(np.float32)
    if output.endswith("int8"):
        if ranges is None:
            ranges = quantization_ranges(values if calibration is None else calibration)
        codes = _scalar_codes(values, ranges)
        return codes.astype(np.uint8) if output == "uint8" else (codes - 128).astype(np.int8)
    bits = np.packbits(values > 0, axis=-1)
    return (bits - 128).astype(np.int8) if output == "binary" else bits


def _scalar_codes(values: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    bounds = np.asarray(ranges).astype(np.float32, copy=False)
    if bounds.ndim != 2 or bounds.shape[0] != 2 or bounds.shape[1] != values.shape[-1]:
        raise ConfigError(f"ranges must have shape (2, {values.shape[-1]}) (min row, max row), not {bounds.shape}")
    starts = bounds[0, :]
    steps = (bounds[1, :] - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    return np.clip(np.floor((values - starts) / steps), 0, 255)


def dequantize(codes: np.ndarray, output: str, ranges: np.ndarray | None = None, dim: int | None = None) -> np.ndarray:
    """Float vectors back from ``codes`` (float64 for int8/uint8, 0/1 per bit for binary), for rescoring.

    ``int8``/``uint8`` need the ``ranges`` they were made with; ``binary``/``ubinary`` need ``dim`` when
    it is not a multiple of 8 (the padding bits are dropped).
    """
    check_output_type(output)
    if output == "float32":
        return np.asarray(codes, dtype=np.float32)
    if output.endswith("binary"):
        raw = np.asarray(codes).view(np.uint8)
        bits = np.unpackbits(raw ^ np.uint8(0x80) if output == "binary" else raw, axis=-1)
        return bits[..., :dim] if dim is not None else bits
    if ranges is None:
        raise ConfigError(f"dequantizing {output} needs the ranges the codes were made with")
    bounds = np.asarray(ranges).astype(np.float32, copy=False)
    steps = (bounds[1] - bounds[0]) / 255
    steps = np.where(steps == 0, 1, steps)
    values = np.asarray(codes).astype(np.float64)
    if output == "int8":
        values += 128
    return values * steps + bounds[0]
