"""Pure pooling functions: token embeddings (B, T, H) + attention mask (B, T) -> (B, H).

They never modify their inputs. Padding positions (mask 0) never contribute.
"""

from __future__ import annotations

import numpy as np

from sentemb.config import Pooling


def pool(token_embeddings: np.ndarray, attention_mask: np.ndarray, mode: Pooling) -> np.ndarray:
    """Pool one padded batch; returns float32 (B, H)."""
    emb = np.asarray(token_embeddings, dtype=np.float32)
    mask = np.asarray(attention_mask).astype(np.float32)
    if mode is Pooling.CLS:
        first = np.argmax(mask > 0, axis=1)
        return emb[np.arange(emb.shape[0]), first].copy()
    if mode is Pooling.MAX:
        masked = np.where(mask[:, :, None] > 0, emb, -np.inf)
        return masked.max(axis=1).astype(np.float32)
    summed = np.where(mask[:, :, None] > 0, emb, 0.0).sum(axis=1, dtype=np.float32)
    counts = np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
    if mode is Pooling.MEAN_SQRT_LEN:
        counts = np.sqrt(counts)
    return (summed / counts).astype(np.float32)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise rows; a zero row stays zero (never NaN)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
