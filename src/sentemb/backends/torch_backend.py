"""PyTorch backend: ``AutoModel`` (a cross-encoder: ``AutoModelForSequenceClassification``; a sparse
encoder: ``AutoModelForMaskedLM`` with SPLADE's pooling) in eval mode, fp32 / bf16 (CPU, CUDA) / fp16 (CUDA).

Pooling runs in torch, in fp32, where the token embeddings are, so that on a GPU only the pooled
(B, H) vectors are copied back to the host; a classifier's logits come back as float32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from sentemb.backends import cuda_fallback
from sentemb.batching import MAX_PADDING
from sentemb.config import Pooling, Precision
from sentemb.errors import BackendError, ConfigError, ModelNotFoundError
from sentemb.export.splade_graph import splade_pool
from sentemb.heads import Head, Logits, Pooled, Splade, head_width
from sentemb.models.modules import DenseLayer
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
    streams = 1
    max_padding = MAX_PADDING
    threads: int | None = None  # torch's own intra-op threads
    graph: str | None = None
    tokenizer: LoadedTokenizer | None = None

    def __init__(self, spec: ModelSpec, config: EncoderConfig, head: Head) -> None:
        self.device = cuda_fallback(config.device, torch.cuda.is_available())
        precision = config.precision
        if precision is Precision.INT8:
            raise ConfigError("int8 runs on the CPU backends: pass backend='openvino' or 'onnx' (or 'auto')")
        if precision is Precision.FP16 and not self.device.startswith("cuda"):
            raise ConfigError("fp16 is for CUDA; on the CPU use precision='bf16' or 'fp32'")
        pooled = isinstance(head, Pooled)
        auto: Any = AutoModel if pooled else AutoModelForSequenceClassification
        if isinstance(head, Splade):
            auto = AutoModelForMaskedLM
        try:
            with no_progress_bars():  # a library should not draw bars for a 0.1 s weight load
                model = auto.from_pretrained(
                    spec.transformer_dir,
                    trust_remote_code=config.trust_remote_code,
                    use_safetensors=not spec.pickle_weights,
                )
        except OSError as exc:  # transformers' words for a folder it cannot read (missing or damaged files)
            raise ModelNotFoundError(f"transformers could not load {spec.transformer_dir}: {exc}") from None
        if pooled and getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        self.model = model.eval()
        self.head = head
        # A cross-encoder's last layer on the token its head reads, where that reproduces the model.
        self._logits = _first_token(spec, model) if isinstance(head, Logits) else None
        (self.model if self._logits is None else self._logits).to(device=self.device, dtype=_DTYPES[precision])
        width = int(model.config.hidden_size) if pooled else int(model.config.num_labels)
        if isinstance(head, Splade):
            width = int(model.get_output_embeddings().out_features)
        self.dim = head_width(spec, head, width)
        # Dense layers, fp32, on the model's device
        self._dense = torch_head(head.dense, self.device) if isinstance(head, Pooled) else None

    def run(self, batch: TokenBatch) -> np.ndarray:
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
            if self._logits is not None:
                return self._logits(**(inputs | {"attention_mask": mask})).float().cpu().numpy()
            out = self.model(**inputs, return_dict=True)
            if isinstance(self.head, Splade):
                return splade_pool(out.logits, mask, self.head.pooling, self.head.activation).cpu().numpy()
            if not isinstance(self.head, Pooled):
                return out.logits.float().cpu().numpy()
            pool_mask = mask if batch.pool_mask is batch.attention_mask else self._to_device(batch.pool_mask)
            pooled = pool_tensor(out.last_hidden_state, pool_mask, self.head.pooling)
            if self._dense is not None:
                pooled = self._dense(pooled)
            return pooled.cpu().numpy()

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if not self.device.startswith("cuda"):
            return tensor
        # From pinned memory the copy is queued behind the GPU's work instead of waiting for it.
        return tensor.pin_memory().to(self.device, non_blocking=True)


def _first_token(spec: ModelSpec, model: Any) -> torch.nn.Module | None:
    """:mod:`sentemb.export.first_token`'s module of ``model``, or None where it does not cover the
    model or does not reproduce this transformers release's logits (``model`` then runs whole)."""
    from sentemb.export import first_token
    from sentemb.export.torch_onnx import input_names

    if not first_token.covers(spec):
        return None
    try:
        return first_token.first_token_classifier(model, input_names(model, uses_type_ids=True))
    except BackendError:
        return None


def pool_tensor(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: Pooling) -> torch.Tensor:
    """:func:`sentemb.pooling.pool` in torch, on the tensors' device: (B, T, H) -> float32 (B, H)."""
    hidden = hidden.float()
    kept = attention_mask > 0
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if mode is Pooling.CLS:
        return hidden[rows, torch.argmax(kept.to(torch.uint8), dim=1)]
    if mode is Pooling.LAST_TOKEN:
        last = kept.shape[1] - 1 - torch.argmax(kept.flip(1).to(torch.uint8), dim=1)
        return hidden[rows, last] * kept.any(dim=1, keepdim=True).float()
    padding = (~kept).unsqueeze(-1)
    if mode is Pooling.MAX:
        return hidden.masked_fill(padding, float("-inf")).amax(dim=1)
    weights = kept.float()
    summed = hidden.masked_fill(padding, 0.0)
    if mode is Pooling.WEIGHTED_MEAN:  # token at position i weighs i + 1
        weights = weights * torch.arange(1, kept.shape[1] + 1, device=hidden.device, dtype=torch.float32)
        summed = summed * weights.unsqueeze(-1)
    summed = summed.sum(dim=1)
    counts = weights.sum(dim=1, keepdim=True).clamp(min=1e-9)
    if mode is Pooling.MEAN_SQRT_LEN:
        counts = counts.sqrt()
    return summed / counts


def torch_head(layers: tuple[DenseLayer, ...], device: str) -> torch.nn.Module | None:
    """The model's Dense layers as one torch module on ``device`` (fp32), or None without any."""
    if not layers:
        return None
    return torch.nn.Sequential(*(_TorchDense(layer) for layer in layers)).to(device).eval()


class _TorchDense(torch.nn.Module):
    """One sentence-transformers Dense layer: activation(x @ W.T + b) (+ x or x @ R.T)."""

    def __init__(self, layer: DenseLayer) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.from_numpy(layer.weight), requires_grad=False)
        self.bias = _frozen(layer.bias)
        self.residual = _frozen(layer.residual)
        self.use_residual = layer.use_residual
        self.activation = _TORCH_ACTIVATIONS[layer.activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(torch.nn.functional.linear(x, self.weight, self.bias))
        if self.use_residual:
            out = out + (x if self.residual is None else torch.nn.functional.linear(x, self.residual))
        return out


def _frozen(array: np.ndarray | None) -> torch.nn.Parameter | None:
    return None if array is None else torch.nn.Parameter(torch.from_numpy(array), requires_grad=False)


_TORCH_ACTIVATIONS = {
    "Tanh": torch.nn.Tanh,
    "Identity": torch.nn.Identity,
    "ReLU": torch.nn.ReLU,
    "GELU": torch.nn.GELU,
    "Sigmoid": torch.nn.Sigmoid,
    "SiLU": torch.nn.SiLU,
}
