"""SPLADE's pooling in torch, for the torch backend and for the exported graph (so that only (B, vocab)
leaves it): MLM logits masked, log1p(relu(x)) (log1p_relu: one more log1p), max or sum over the tokens,
as sentence-transformers' ``SpladePooling`` computes it.

Max pooling takes the maximum first and applies the activation to (B, vocab) only: relu and log1p never
decrease, so the largest input gives the largest output, the same float32 value, at 1/T of the work.
"""

from __future__ import annotations

from typing import Any

HEAD_PREFIX = "splade-"


def parse_head(name: str) -> tuple[str, str]:
    """(pooling, activation) of a recipe head such as ``splade-max-relu``."""
    pooling, activation = name.removeprefix(HEAD_PREFIX).split("-", 1)
    return pooling, activation


def graph_log1p(x: Any) -> Any:
    """log(1 + x) to a few float32 ulps from ops every runtime has (ONNX has no Log1p): ``x * log(u) / (u - 1)``
    with ``u = 1 + x``, and ``x`` itself where ``u`` rounds to 1 (a plain ``log(1 + x)`` would turn weights
    below 6e-8 into 0 and drop their ids)."""
    import torch

    u = x + 1.0
    d = u - 1.0
    return torch.where(d == 0, x, x * torch.log(u) / torch.where(d == 0, torch.ones_like(d), d))


def splade_pool(logits: Any, mask: Any, pooling: str, activation: str, *, exported: bool = False) -> Any:
    """(B, T, vocab) MLM logits and the (B, T) attention mask -> (B, vocab) float32 SPLADE weights."""
    import torch

    log1p = graph_log1p if exported else torch.log1p
    masked = logits.float() * mask.unsqueeze(-1).to(torch.float32)
    if pooling == "max":
        weights = log1p(torch.relu(masked.amax(dim=1)))
        return log1p(weights) if activation == "log1p_relu" else weights
    weights = log1p(torch.relu(masked))
    if activation == "log1p_relu":
        weights = log1p(weights)
    return weights.sum(dim=1)


def splade_module(model: Any, names: list[str], head: str) -> Any:
    """A module taking the inputs positionally (in ``names``' order) and returning SPLADE's (B, vocab)."""
    import torch

    pooling, activation = parse_head(head)

    class SpladeOutput(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            inputs = dict(zip(names, args, strict=True))
            logits = self.inner(**inputs, return_dict=True).logits
            return splade_pool(logits, inputs["attention_mask"], pooling, activation, exported=True)

    return SpladeOutput().eval()
