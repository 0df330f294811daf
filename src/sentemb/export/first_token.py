"""The first-token cross-encoder: the last layer computed for the first token only.

A cross-encoder's classification head reads one row of the last layer, the first token's (BERT's
pooler, the RoBERTa / XLM-RoBERTa and ELECTRA heads: ``hidden[:, 0]``). That row depends on every
token's keys and values in the last layer but on no other row of its query, attention output and
feed-forward block, so the last layer runs its key and value projections on all tokens and the rest
on the first token alone: the same logits, with about 5/6 of one layer's work left out (14% of a
6-layer model). The module is built from transformers' BERT-layout modules by name (``attention.self.
query``, ...); :func:`first_token_classifier` compares its logits with the model's own on built-in
inputs and refuses when they differ (or when a name is gone), so a release that changes them cannot
yield different scores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sentemb.errors import BackendError
from sentemb.export.packed import mismatch, parity_failure, parity_inputs
from sentemb.export.recipe import plain_encoder

if TYPE_CHECKING:
    from sentemb.models import ModelSpec

# Cross-encoders built from BERT's layer stack whose heads read the first token.
FIRST_TOKEN_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")


def covers(spec: ModelSpec) -> bool:
    """Whether ``spec`` is a cross-encoder whose last layer can run on the first token only."""
    return spec.task == "rerank" and spec.model_type in FIRST_TOKEN_TYPES and plain_encoder(spec)


def _last_layer(layer: Any, heads: int) -> Any:
    """A module computing BERT-layout ``layer``'s output for the first token, from its own modules:
    ``(hidden (B, T, H), additive mask (B, 1, 1, T)) -> (B, 1, H)``. Its children carry the layer's
    names (attention.self.query, intermediate.dense, ...), so its nodes are named as the layer's."""
    import torch

    class SelfAttention(torch.nn.Module):  # the first token's query against every token's key and value
        def __init__(self) -> None:
            super().__init__()
            own = layer.attention.self
            self.query, self.key, self.value = own.query, own.key, own.value
            self.size = self.query.out_features // heads

        def forward(self, first: torch.Tensor, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            rows = h.shape[0]

            def by_head(t: torch.Tensor) -> torch.Tensor:
                return t.view(rows, -1, heads, self.size).transpose(1, 2)

            q, k, v = by_head(self.query(first)), by_head(self.key(h)), by_head(self.value(h))
            scores = torch.matmul(q, k.transpose(-1, -2)) * self.size**-0.5 + bias
            return torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(rows, 1, -1)

    class Attention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.self = SelfAttention()
            self.output = layer.attention.output  # LayerNorm(dense(context) + residual)

        def forward(self, first: torch.Tensor, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            return self.output(self.self(first, h, bias), first)

    class LastLayer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = Attention()
            self.intermediate, self.output = layer.intermediate, layer.output

        def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            attended = self.attention(h[:, :1], h, bias)
            return self.output(self.intermediate(attended), attended)

    return LastLayer()


def _module(model: Any) -> Any:
    """``model``'s logits, its last layer on the first token only. Detaches the last layer from
    ``model``'s own encoder."""
    import torch

    base = model.base_model
    layers = list(base.encoder.layer)
    pooler = getattr(base, "pooler", None)  # BERT: the head reads the pooler's output; others the rows

    class FirstToken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            # A list named "layer", so that the last layer's nodes are named layer.N as in the model.
            self.layer = torch.nn.ModuleList([*layers[:-1], _last_layer(layers[-1], model.config.num_attention_heads)])

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
        ) -> torch.Tensor:
            types = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            h = base(input_ids=input_ids, attention_mask=attention_mask, **types, return_dict=True).last_hidden_state
            bias = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
            out = self.layer[-1](h, bias)
            return model.classifier(pooler(out) if pooler is not None else out)

    module = FirstToken()
    base.encoder.layer = torch.nn.ModuleList(layers[:-1])
    return module.eval()


def _refuse(model: Any, reason: str) -> BackendError:
    return mismatch("first-token graph", model, reason, "backend='torch'")


def first_token_classifier(model: Any, names: list[str]) -> Any:
    """The first-token module of the sequence classifier ``model`` (whose encoder then stops one layer
    short), checked against the model's own logits (max abs <= 1e-4); refused, ``model`` is left whole."""
    import torch

    inputs = parity_inputs(int(model.config.vocab_size), names)
    encoder = model.base_model.encoder
    layers = encoder.layer
    with torch.no_grad():
        expected = model(**dict(zip(names, inputs, strict=True)), return_dict=True).logits
        try:
            module = _module(model)
            got = module(*inputs)
        except (AttributeError, TypeError) as exc:  # a module or attribute renamed or gone
            reason: str | None = f"it reads what this release no longer has ({exc})"
        else:
            reason = parity_failure(got, expected, "logits")
    if reason is not None:
        encoder.layer = layers  # the model is whole again
        raise _refuse(model, reason)
    return module
