"""Which MatMuls of an int8 export stay fp32: roles named in the recipe, resolved to the graph's node names.

A role names the same MatMuls in every BERT-like family, whichever builder wrote the graph: it is
matched against the node's name (torch.onnx: ``/inner/bert/encoder/layer.3/intermediate/dense/MatMul``)
and its weight's name (the torch-free builder: ``encoder.layer.3.intermediate.dense.weight``).

    attention          the query, key and value projections
    attention-output   the projection after attention
    feed-forward       both linear layers of the feed-forward block
    attention-scores   the MatMuls of two activations (scores, then scores x values): no weight
    head               whatever follows the encoder: pooler, classifier, masked-LM head
    layer:N            every MatMul of encoder layer N (N < 0 counts from the last: layer:-1)

Both int8 paths honour the resolved names: ONNX Runtime's dynamic quantisation leaves them out
(``nodes_to_exclude``) and NNCF's static quantisation ignores them (``IgnoredScope``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from sentemb.errors import ConfigError

_SEP = r"[./]"
ROLES = {
    "attention": re.compile(rf"{_SEP}(self{_SEP}(query|key|value)|[qkv]_lin|(q|k|v)_proj){_SEP}"),
    "attention-output": re.compile(rf"{_SEP}(attention{_SEP}output{_SEP}dense|out_lin){_SEP}"),
    "feed-forward": re.compile(
        rf"{_SEP}(intermediate{_SEP}dense|(?<!attention{_SEP})output{_SEP}dense|ffn{_SEP}lin[12]){_SEP}"
    ),
    "head": re.compile(rf"(^|{_SEP})(pooler|classifier|pre_classifier|cls{_SEP}predictions|lm_head|vocab_\w+){_SEP}"),
}
SCORES = "attention-scores"
_LAYER = re.compile(r"^layer:(-?\d+)$")
_LAYER_IN_NAME = re.compile(rf"layer{_SEP}(\d+){_SEP}")


def check_roles(roles: Sequence[str]) -> tuple[str, ...]:
    """``roles`` as a sorted tuple without repeats, or a ConfigError naming the ones that exist."""
    unknown = [r for r in roles if r not in ROLES and r != SCORES and not _LAYER.match(r)]
    if unknown:
        known = ", ".join([*ROLES, SCORES, "layer:N"])
        raise ConfigError(f"MatMuls kept fp32 are named by role; {', '.join(map(repr, unknown))} is none of {known}")
    return tuple(sorted(set(roles)))


def _layer(name: str) -> int | None:
    found = _LAYER_IN_NAME.search(name)
    return int(found.group(1)) if found else None


def resolve(matmuls: Iterable[tuple[str, str | None]], roles: Sequence[str]) -> list[str]:
    """The node names among ``matmuls`` ((node name, weight name or None), in graph order) that ``roles`` keep."""
    nodes = list(matmuls)
    if not roles:
        return []
    layers = [n for n in (_layer(f"/{node}/{weight or ''}") for node, weight in nodes) if n is not None]
    count = max(layers) + 1 if layers else 0
    asked = [int(m.group(1)) for r in roles if (m := _LAYER.match(r))]
    wanted = {n + count if n < 0 else n for n in asked if -count <= n < count}
    kept = []
    for node, weight in nodes:
        text = f"/{node}/{weight or ''}"
        if (
            (weight is None and SCORES in roles)
            or (weight is not None and any(ROLES[r].search(text) for r in roles if r in ROLES))
            or _layer(text) in wanted
        ):
            kept.append(node)
    return kept
