"""The backend seam: a padded token batch in, token embeddings (B, T, H) float32 out.

Everything else (tokenising, batching, pooling, normalising) lives in the encoder, so each backend
stays one small class. ``create_backend`` picks the implementation.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Protocol

import numpy as np

from sentemb.errors import ConfigError

if TYPE_CHECKING:
    from sentemb.batching import TokenBatch
    from sentemb.config import EncoderConfig
    from sentemb.models import ModelSpec
    from sentemb.tokenize import LoadedTokenizer

log = logging.getLogger("sentemb")


class Backend(Protocol):
    """What the encoder needs from a backend."""

    name: str  # "torch" or "onnx"
    device: str  # "cpu", "cuda", "cuda:1"
    dim: int
    # The backend's own tokenizer (e.g. cached beside an ONNX export), or None for the model folder's.
    tokenizer: LoadedTokenizer | None

    def forward(self, batch: TokenBatch) -> np.ndarray:
        """Token embeddings (B, T, dim) as float32 for one padded batch."""
        ...


def cuda_fallback(requested: str, available: bool) -> str:
    """Resolve 'auto'/'cuda' against what the machine has; warn loudly on a fallback."""
    if requested == "auto":
        return "cuda" if available else "cpu"
    if requested.startswith("cuda") and not available:
        message = f"device={requested!r} was asked for but CUDA is not available here; running on the CPU"
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        log.warning(message)
        return "cpu"
    return requested


def create_backend(spec: ModelSpec, config: EncoderConfig) -> Backend:
    """Build the backend that ``config`` asks for."""
    if config.backend in ("onnx", "auto"):
        try:
            from sentemb.backends.onnx_backend import create_onnx_backend
        except ImportError as exc:  # not built yet, or onnxruntime missing
            if config.backend == "onnx":
                raise ConfigError(f"the ONNX backend needs onnxruntime: pip install 'sentemb[onnx]' ({exc})") from None
        else:
            return create_onnx_backend(spec, config)
    from sentemb.backends.torch_backend import TorchBackend

    return TorchBackend(spec, config)
