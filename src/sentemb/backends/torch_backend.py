"""PyTorch backend: ``AutoModel`` in eval mode, fp32 / bf16 (CPU, CUDA) / fp16 (CUDA).

Pooling runs in torch, in fp32, where the token embeddings are, so that on a GPU only the pooled
(B, H) vectors are copied back to the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import AutoModel

from sentemb.backends import cuda_fallback
from sentemb.config import Pooling, Precision
from sentemb.errors import ConfigError
from sentemb.scoped import no_progress_bars

if TYPE_CHECKING:
    from sentemb.batching import TokenBatch
    from sentemb.config import EncoderConfig
    from sentemb.models import ModelSpec
    from sentemb.tokenize import LoadedTokenizer

_DTYPES = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


class TorchBackend:
    """Runs the transformer (only its encoder, for encoder-decoder models such as BART)."""

    name = "torch"
    # One batch at a time, also on a GPU: a second thread launching kernels measured 0.3-0.9x.
    parallel = 1
    tokenizer: LoadedTokenizer | None = None

    def __init__(self, spec: ModelSpec, config: EncoderConfig) -> None:
        self.device = cuda_fallback(config.device, torch.cuda.is_available())
        precision = config.precision
        if precision is Precision.INT8:
            raise ConfigError("int8 runs on the CPU backends: pass backend='openvino' or 'onnx' (or 'auto')")
        if precision is Precision.FP16 and not self.device.startswith("cuda"):
            raise ConfigError("fp16 is for CUDA; on the CPU use precision='bf16' or 'fp32'")
        with no_progress_bars():  # a library should not draw bars for a 0.1 s weight load
            model = AutoModel.from_pretrained(
                spec.transformer_dir,
                trust_remote_code=config.trust_remote_code,
                use_safetensors=not spec.pickle_weights,
            )
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        self.model = model.to(device=self.device, dtype=_DTYPES[precision]).eval()
        self.dim = int(model.config.hidden_size)

    def embed(self, batch: TokenBatch, pooling: Pooling) -> np.ndarray:
        with torch.inference_mode():
            mask = self._to_device(batch.attention_mask)
            inputs = {
                "input_ids": self._to_device(batch.input_ids),
                # Without padding, no mask: transformers then neither builds one nor reads it back from
                # the GPU to find out that it could have skipped it (a sync per batch).
                "attention_mask": None if batch.attention_mask.all() else mask,
            }
            if batch.token_type_ids is not None:
                inputs["token_type_ids"] = self._to_device(batch.token_type_ids)
            hidden = self.model(**inputs, return_dict=True).last_hidden_state
            return pool_tensor(hidden, mask, pooling).cpu().numpy()

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if not self.device.startswith("cuda"):
            return tensor
        # From pinned memory the copy is queued behind the GPU's work instead of waiting for it.
        return tensor.pin_memory().to(self.device, non_blocking=True)


def pool_tensor(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: Pooling) -> torch.Tensor:
    """:func:`sentemb.pooling.pool` in torch, on the tensors' device: (B, T, H) -> float32 (B, H)."""
    hidden = hidden.float()
    if mode is Pooling.CLS:
        first = torch.argmax((attention_mask > 0).to(torch.uint8), dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    padding = (attention_mask == 0).unsqueeze(-1)
    if mode is Pooling.MAX:
        return hidden.masked_fill(padding, float("-inf")).amax(dim=1)
    summed = hidden.masked_fill(padding, 0.0).sum(dim=1)
    counts = (attention_mask > 0).sum(dim=1, keepdim=True).float().clamp(min=1e-9)
    if mode is Pooling.MEAN_SQRT_LEN:
        counts = counts.sqrt()
    return summed / counts
