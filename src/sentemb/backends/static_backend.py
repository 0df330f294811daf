"""The static backend: a padded batch of token ids in, the mean of their rows of a table out.

A static embedding model (sentence-transformers' ``StaticEmbedding``, model2vec) has no transformer:
the "forward pass" is a lookup in a (tokens, dim) float32 table, so it runs in numpy on the CPU
with nothing to export or quantise. Tokenising, batching, Dense, Normalize and truncate_dim are the
encoder's, as for every backend.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from sentemb.batching import MAX_PADDING
from sentemb.config import BackendName, Pooling, Precision
from sentemb.errors import ConfigError
from sentemb.heads import Head, Pooled, head_width
from sentemb.models.static import load_table
from sentemb.pooling import apply_dense, pool
from sentemb.tokenize import LoadedTokenizer, prepare_tokenizer

if TYPE_CHECKING:
    from sentemb.batching import TokenBatch
    from sentemb.config import EncoderConfig
    from sentemb.models import ModelSpec
    from sentemb.models.static import StaticTable


def check_static_config(config: EncoderConfig) -> EncoderConfig:
    """``config`` for a static model, which runs on the CPU in float32 whatever the machine; options
    that ask for another runtime, precision or a GPU are refused rather than ignored."""
    if config.backend not in (BackendName.TORCH, BackendName.AUTO):  # torch: the default, left as given
        raise ConfigError(
            f"backend={config.backend.value!r} does not apply to a static embedding model: it is a table lookup "
            "(backend 'static'); leave the backend out"
        )
    if config.precision is not Precision.FP32:
        raise ConfigError(
            f"precision={config.precision.value!r} does not apply to a static embedding model: its table is "
            "looked up in float32; leave the precision out"
        )
    if config.device.startswith("cuda"):
        raise ConfigError(
            f"device={config.device!r}: a static embedding model runs on the CPU (a table lookup is faster there "
            "than a copy to the GPU); pass device='cpu' or 'auto'"
        )
    return config


class StaticBackend:
    """Mean of table rows over each row's tokens (padding, a left-out prompt and, by model2vec's rules,
    the unknown token excluded), then the model's Dense layers."""

    name = "static"
    device = "cpu"
    streams = 1
    max_padding = MAX_PADDING
    threads: int | None = None
    graph: str | None = None

    def __init__(self, spec: ModelSpec, head: Head) -> None:
        if spec.static is None:
            raise ConfigError(f"{spec.root} is not a static embedding model")
        if not isinstance(head, Pooled):
            raise ConfigError(f"{spec.root} is a static embedding model: it embeds texts, it does not score pairs")
        self._table = load_table(spec.static)
        self._dense = head.dense
        self._pooling = head.pooling
        self.dim = head_width(spec, head, int(self._table.shape[1]))
        self.tokenizer: LoadedTokenizer | None = static_tokenizer(spec.static)
        self._unk = unknown_id(self.tokenizer.tokenizer) if spec.static.drop_unk else None

    def run(self, batch: TokenBatch) -> np.ndarray:
        mask = batch.pool_mask
        if self._unk is not None:
            mask = np.where(batch.input_ids == self._unk, 0, mask)
        if self._pooling is not Pooling.MEAN:
            pooled = pool(self._table[batch.input_ids], mask, self._pooling)
            return apply_dense(pooled, self._dense) if self._dense else pooled
        # one batched matrix product of the 0/1 mask with the rows (measured 2-3x faster than summing
        # only the real tokens' rows); float32 sums, as sentence-transformers' EmbeddingBag and model2vec
        weights = mask.astype(np.float32)
        sums = np.matmul(weights[:, None, :], self._table[batch.input_ids])[:, 0, :]
        pooled = sums / np.maximum(weights.sum(axis=1, keepdims=True), 1.0)
        return apply_dense(pooled, self._dense) if self._dense else pooled


def static_tokenizer(table: StaticTable) -> LoadedTokenizer:
    """The folder's tokenizer without special tokens (both libraries tokenise with
    ``add_special_tokens=False``), truncation or padding: the encoder cuts texts at max_length itself."""
    from tokenizers import Tokenizer

    data = json.loads(table.tokenizer_path.read_text(encoding="utf-8"))
    data["post_processor"] = None
    return LoadedTokenizer(prepare_tokenizer(Tokenizer.from_str(json.dumps(data))), False, 0)


def unknown_id(tokenizer: object) -> int | None:
    """The unknown token's id, found as model2vec finds it (the model's unk_token; Unigram's unk_id)."""
    model = getattr(tokenizer, "model", None)
    if hasattr(model, "unk_token"):
        token = model.unk_token  # type: ignore[union-attr]
        return None if token is None else tokenizer.token_to_id(token)  # type: ignore[attr-defined]
    unk = json.loads(tokenizer.to_str())["model"].get("unk_id")  # type: ignore[attr-defined]
    return None if unk is None else int(unk)
