"""Pure pooling functions: token embeddings (B, T, H) + attention mask (B, T) -> (B, H).

They never modify their inputs. Positions with mask 0 (padding, and a prompt left out of pooling)
never contribute. Each mode computes what sentence-transformers' ``Pooling`` module does on a
right-padded batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from sentemb.config import Pooling
from sentemb.errors import ConfigError

if TYPE_CHECKING:
    from sentemb.models.modules import DenseLayer


def pool(token_embeddings: np.ndarray, attention_mask: np.ndarray, mode: Pooling) -> np.ndarray:
    """Pool one padded batch; returns float32 (B, H)."""
    emb = np.asarray(token_embeddings, dtype=np.float32)
    mask = np.asarray(attention_mask).astype(np.float32)
    rows = np.arange(emb.shape[0])
    if mode is Pooling.CLS:  # the first position the mask keeps (after a left-out prompt)
        return emb[rows, np.argmax(mask > 0, axis=1)].copy()
    if mode is Pooling.LAST_TOKEN:  # the last position the mask keeps; a row it keeps nothing of -> zeros
        kept: np.ndarray = np.asarray(mask > 0)
        last = mask.shape[1] - 1 - np.argmax(np.flip(kept, axis=1), axis=1)
        return np.where(np.any(kept, axis=1, keepdims=True), emb[rows, last], 0.0).astype(np.float32)
    if mode is Pooling.MAX:
        masked = np.where(mask[:, :, None] > 0, emb, -np.inf)
        return masked.max(axis=1).astype(np.float32)
    if mode is Pooling.WEIGHTED_MEAN:  # token at position i weighs i + 1 (right padding: no offset)
        mask = mask * np.arange(1, mask.shape[1] + 1, dtype=np.float32)[None, :]
    summed = np.where(mask[:, :, None] > 0, emb * mask[:, :, None], 0.0).sum(axis=1, dtype=np.float32)
    counts = np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
    if mode is Pooling.MEAN_SQRT_LEN:
        counts = np.sqrt(counts)
    return (summed / counts).astype(np.float32)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise rows; a zero row stays zero (never NaN)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def truncate_dim(vectors: np.ndarray, dim: int | None, *, renormalize: bool = False) -> np.ndarray:
    """Matryoshka: the first ``dim`` numbers of each row (all of them for ``None``).

    As sentence-transformers' ``truncate_dim`` this cuts the model's final vectors (after its
    Normalize module) and does not re-normalise them; ``renormalize=True`` gives unit rows again
    (what OpenAI's ``dimensions`` promises). ``dim`` outside 1..width is a :class:`ConfigError`.
    """
    width = vectors.shape[1]
    if dim is None:
        return normalize(vectors) if renormalize else vectors
    if not 1 <= dim <= width:
        raise ConfigError(f"truncate_dim={dim} is not between 1 and the model's width {width}; pass 1..{width}")
    cut = np.ascontiguousarray(vectors[:, :dim])
    return normalize(cut) if renormalize else cut


def apply_dense(vectors: np.ndarray, layers: tuple[DenseLayer, ...]) -> np.ndarray:
    """The model's Dense layers in numpy (float32), as sentence-transformers' ``Dense`` computes them."""
    out = np.asarray(vectors, dtype=np.float32)
    for layer in layers:
        x = out
        out = x @ layer.weight.T
        if layer.bias is not None:
            out = out + layer.bias
        out = _ACTIVATIONS[layer.activation](out)
        if layer.use_residual:
            out = out + (x if layer.residual is None else x @ layer.residual.T)
    return out.astype(np.float32, copy=False)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in numpy (Abramowitz & Stegun 7.1.26, error below 1.5e-7): GELU without scipy."""
    sign = np.sign(x)
    a = np.abs(x).astype(np.float64)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Tanh": np.tanh,
    "Identity": lambda x: x,
    "ReLU": lambda x: np.maximum(x, 0.0),
    "GELU": lambda x: 0.5 * x * (1.0 + _erf(x / np.float32(np.sqrt(2.0)))),
    "Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "SiLU": lambda x: x / (1.0 + np.exp(-x)),
}
