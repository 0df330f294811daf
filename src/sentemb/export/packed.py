"""The packed BERT graph: every linear layer on the real tokens only, padding back in for attention.

The tokens of all rows are gathered into one (1, N, H) tensor after the embeddings; only attention
gathers them back into (B, T) rows (padding then masked as in transformers' eager attention). The
leading 1 matters to OpenVINO: its int8 quantisation of each LayerNorm's output runs about ten times
slower on a 2-D (N, H) matrix (9-11% of int8's time in its per-layer counters, 1-1.5% on (1, N, H)).
It reads transformers' BERT modules by name (``encoder.layer[i].attention.self.query``, ...), so a
transformers release that renames or changes them must not yield a wrong graph: :func:`packed_bert`
compares the packed module with the model's own output on built-in inputs and refuses to export
when they differ (or when a name is gone).
"""

from __future__ import annotations

from typing import Any

from sentemb.errors import BackendError
from sentemb.export.recipe import version

# Largest |packed - model| accepted on the parity inputs (fp32; measured ~1e-6 on tiny and real models).
PARITY_TOLERANCE = 1e-4


def _packed_module(model: Any) -> Any:
    """A module computing ``model``'s last_hidden_state (padding positions zero) on packed tokens."""
    import torch

    class PackedBert(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embeddings = model.embeddings
            self.layers = model.encoder.layer
            self.heads = model.config.num_attention_heads
            self.head_size = model.config.hidden_size // self.heads

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
        ) -> torch.Tensor:
            rows, width = input_ids.shape
            x = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
            size = x.shape[-1]
            flat = attention_mask.reshape(-1)
            real = torch.nonzero(flat).squeeze(1)  # positions of real tokens in (B*T)
            packed_row = torch.where(flat > 0, torch.cumsum(flat, 0) - 1, torch.zeros_like(flat))
            bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
            h = x.reshape(1, -1, size).index_select(1, real)

            def by_head(t: torch.Tensor) -> torch.Tensor:
                return t.index_select(1, packed_row).view(rows, width, self.heads, self.head_size).transpose(1, 2)

            for layer in self.layers:
                att = layer.attention.self
                q, k, v = by_head(att.query(h)), by_head(att.key(h)), by_head(att.value(h))
                scores = torch.matmul(q, k.transpose(-1, -2)) * self.head_size**-0.5 + bias
                context = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(1, -1, size)
                a = layer.attention.output.LayerNorm(layer.attention.output.dense(context.index_select(1, real)) + h)
                inner = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(a))
                h = layer.output.LayerNorm(layer.output.dense(inner) + a)
            return h.index_select(1, packed_row).view(rows, width, size) * attention_mask[:, :, None].to(h.dtype)

    return PackedBert().eval()


def parity_inputs(vocab_size: int, names: list[str]) -> tuple[Any, ...]:
    """Three rows of 11, 6 and 1 real tokens (seeded ids), padded to 11: inputs in ``names``' order."""
    import torch

    lengths = (11, 6, 1)
    ids = torch.randint(0, vocab_size, (len(lengths), max(lengths)), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return (ids, mask, torch.zeros_like(ids))[: len(names)]


def mismatch(graph: str, model: Any, reason: str, instead: str) -> BackendError:
    """The refusal of a graph sentemb builds from transformers' modules (``graph``: its name) that does
    not reproduce ``model`` on this transformers release; ``instead``: what to use meanwhile."""
    return BackendError(
        f"sentemb's {graph} for {model.config.model_type} does not match transformers "
        f"{version('transformers')}: {reason}. It was not exported. Use {instead} or a transformers release "
        "sentemb was tested with, and please report it."
    )


def _refuse(model: Any, reason: str) -> BackendError:
    return mismatch("packed graph", model, reason, "backend='onnx' (its graph is not packed)")


def packed_bert(model: Any, names: list[str]) -> Any:
    """The packed module of ``model``, checked against the model's own output (max abs <= 1e-4)."""
    import torch

    inputs = parity_inputs(int(model.config.vocab_size), names)
    mask = inputs[1]
    with torch.no_grad():
        expected = model(**dict(zip(names, inputs, strict=True)), return_dict=True).last_hidden_state
        expected = expected * mask[:, :, None].to(expected.dtype)
        try:
            packed = _packed_module(model)
            got = packed(*inputs)
        except (AttributeError, TypeError) as exc:  # a module or attribute renamed or gone
            raise _refuse(model, f"it reads what this release no longer has ({exc})") from None
    reason = parity_failure(got, expected, "output")
    if reason is not None:
        raise _refuse(model, reason)
    return packed


def parity_failure(got: Any, expected: Any, what: str) -> str | None:
    """Why the tensor ``got`` does not stand for the model's own ``expected`` (its ``what``: output,
    logits), or None when it does: the same shape and within PARITY_TOLERANCE (NaN never is)."""
    has, differs = ("have", "differ") if what.endswith("s") else ("has", "differs")
    if got.shape != expected.shape:
        return f"its {what} {has} shape {tuple(got.shape)}, the model's {tuple(expected.shape)}"
    diff = float((got - expected).abs().max())
    if not diff <= PARITY_TOLERANCE:
        return f"its {what} {differs} from the model's own by {diff:.2e} (> {PARITY_TOLERANCE:g})"
    return None
