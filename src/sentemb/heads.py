"""What a backend computes after the transformer: the part of the seam that differs between model kinds.

A backend runs a padded token batch and returns a ``(B, D)`` float32 matrix; its :data:`Head` says what
that matrix is and where it is computed:

    Pooled  embeddings: the graph (or torch model) gives token embeddings (B, T, H); the backend pools
            them where they lie (numpy on the CPU, torch on a GPU) and applies the model's Dense layers.
    Logits  cross-encoders: the sequence-classification head is part of the graph (the export recipe
            says so), which gives (B, labels) logits.
    Splade  sparse (SPLADE) encoders: the masked-language-model head and SPLADE's pooling are part of the
            graph, which gives (B, vocab) weights; the (B, T, vocab) logits never leave it.

A new kind adds a head here and, where its graph differs, a field of the export recipe; the
tokenise -> plan batches -> run pipeline (:func:`sentemb.batching.run_batches`) and the backends stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sentemb.config import Pooling
from sentemb.errors import UnsupportedModelError
from sentemb.models.modules import check_backbone_width
from sentemb.pooling import apply_dense, pool

if TYPE_CHECKING:
    from sentemb.batching import TokenBatch
    from sentemb.models import ModelSpec
    from sentemb.models.modules import DenseLayer


@dataclass(frozen=True)
class Pooled:
    """Token embeddings pooled (padding and left-out prompt tokens excluded), then the Dense layers."""

    pooling: Pooling
    dense: tuple[DenseLayer, ...] = ()
    output = "last_hidden_state"  # the graph's output this head reads
    graph_head = "hidden"  # what the exported graph ends with (part of the recipe)

    def finish(self, graph_output: np.ndarray, batch: TokenBatch) -> np.ndarray:
        pooled = pool(graph_output, batch.pool_mask, self.pooling)
        return apply_dense(pooled, self.dense) if self.dense else pooled


@dataclass(frozen=True)
class Logits:
    """A sequence-classification head inside the graph: (B, labels) logits, as float32."""

    labels: int
    output = "logits"
    graph_head = "logits"

    def finish(self, graph_output: np.ndarray, batch: TokenBatch) -> np.ndarray:
        # a copy: the runtime may reuse its output buffer for the next batch
        return np.array(graph_output, dtype=np.float32).reshape(len(batch.input_ids), -1)


@dataclass(frozen=True)
class Splade:
    """SPLADE inside the graph: MLM logits masked, ``activation`` (relu: log1p(relu(x)); log1p_relu: one
    more log1p), then ``pooling`` (max or sum) over the tokens: (B, vocab) float32 weights."""

    pooling: str
    activation: str
    output = "splade"

    @property
    def graph_head(self) -> str:
        return f"splade-{self.pooling}-{self.activation}"

    def finish(self, graph_output: np.ndarray, batch: TokenBatch) -> np.ndarray:
        return np.array(graph_output, dtype=np.float32).reshape(len(batch.input_ids), -1)


Head = Pooled | Logits | Splade


def head_width(spec: ModelSpec, head: Head, out_width: int) -> int:
    """Numbers per row a backend returns: after the Dense layers (the first must take the transformer's
    width), or the classifier's labels."""
    if isinstance(head, Pooled):
        return check_backbone_width(spec.root, out_width, head.dense)
    if isinstance(head, Splade):
        return out_width
    if out_width != head.labels:
        raise UnsupportedModelError(
            f"{spec.root}: the classifier gives {out_width} scores but config.json names {head.labels} labels"
        )
    return out_width
