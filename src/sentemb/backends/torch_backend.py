"""PyTorch backend: ``AutoModel`` in eval mode, fp32 / bf16 (CPU, CUDA) / fp16 (CUDA)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import AutoModel
from transformers.utils import logging as hf_logging

from sentemb.backends import cuda_fallback
from sentemb.config import Precision
from sentemb.errors import ConfigError

if TYPE_CHECKING:
    from sentemb.batching import TokenBatch
    from sentemb.config import EncoderConfig
    from sentemb.models import ModelSpec
    from sentemb.tokenize import LoadedTokenizer

_DTYPES = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


class TorchBackend:
    """Runs the transformer (only its encoder, for encoder-decoder models such as BART)."""

    name = "torch"
    parallel = 1
    tokenizer: LoadedTokenizer | None = None

    def __init__(self, spec: ModelSpec, config: EncoderConfig) -> None:
        self.device = cuda_fallback(config.device, torch.cuda.is_available())
        precision = config.precision
        if precision is Precision.INT8:
            raise ConfigError("int8 runs on the CPU backends: pass backend='openvino' or 'onnx' (or 'auto')")
        if precision is Precision.FP16 and not self.device.startswith("cuda"):
            raise ConfigError("fp16 is for CUDA; on the CPU use precision='bf16' or 'fp32'")
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a library should not draw bars for a 0.1 s weight load
        try:
            model = AutoModel.from_pretrained(
                spec.transformer_dir,
                trust_remote_code=config.trust_remote_code,
                use_safetensors=not spec.pickle_weights,
            )
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        self.model = model.to(device=self.device, dtype=_DTYPES[precision]).eval()
        self.dim = int(model.config.hidden_size)

    def forward(self, batch: TokenBatch) -> np.ndarray:
        with torch.inference_mode():
            inputs = {
                "input_ids": torch.from_numpy(batch.input_ids).to(self.device),
                "attention_mask": torch.from_numpy(batch.attention_mask).to(self.device),
            }
            if batch.token_type_ids is not None:
                inputs["token_type_ids"] = torch.from_numpy(batch.token_type_ids).to(self.device)
            hidden = self.model(**inputs, return_dict=True).last_hidden_state
            return hidden.float().cpu().numpy()
