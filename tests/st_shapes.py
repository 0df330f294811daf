"""Tiny sentence-transformers folders of every module shape sentemb runs, saved by sentence-transformers.

All folders share one tiny BERT backbone and, per module list, identical top-level JSON files, so
that the ONNX/OpenVINO export cache (keyed on those files) holds one export per module list, not
per folder: the pooling modes and include_prompt differ only inside 1_Pooling/.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROMPTS = {"query": "query: ", "passage": "passage: "}
TRUNCATE = 8  # truncate_dim of the Matryoshka cases


@dataclass(frozen=True)
class Shape:
    pooling: str
    include_prompt: bool = True
    dense: tuple[tuple[int, str, bool], ...] = ()  # (out_features, activation class, bias)
    normalize: bool = False
    truncate: bool = False  # also compare truncate_dim=TRUNCATE


SHAPES = {
    "cls": Shape("cls"),
    "mean": Shape("mean"),
    "max": Shape("max"),
    "mean_sqrt_len_tokens": Shape("mean_sqrt_len_tokens"),
    "weightedmean": Shape("weightedmean"),
    "lasttoken": Shape("lasttoken"),
    "mean/no_prompt": Shape("mean", include_prompt=False),
    "cls/no_prompt": Shape("cls", include_prompt=False),
    "weightedmean/no_prompt": Shape("weightedmean", include_prompt=False),
    "lasttoken/no_prompt": Shape("lasttoken", include_prompt=False),
    "dense_tanh": Shape("mean", dense=((16, "Tanh", True),), truncate=True),
    "dense_identity": Shape("cls", dense=((24, "Identity", False),)),
    "dense+normalize": Shape("mean", dense=((16, "Tanh", True),), normalize=True, truncate=True),
    "two_dense": Shape("max", dense=((24, "GELU", True), (8, "Identity", True))),
    "normalize": Shape("mean", normalize=True, truncate=True),
}


def build_st_folder(backbone: Path, shape: Shape, out: Path, *, seed: int = 0, **st_options: object) -> Path:
    """Build ``shape`` on ``backbone`` with sentence-transformers' own modules and save it to ``out``."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    torch.manual_seed(seed)
    modules: list[torch.nn.Module] = [models.Transformer(str(backbone))]
    width = modules[0].get_embedding_dimension()
    modules.append(models.Pooling(width, shape.pooling, include_prompt=shape.include_prompt))
    for out_features, activation, bias in shape.dense:
        act = getattr(torch.nn, activation)()
        modules.append(models.Dense(width, out_features, bias=bias, activation_function=act))
        width = out_features
    if shape.normalize:
        modules.append(models.Normalize())
    options = {"prompts": PROMPTS, **st_options}
    SentenceTransformer(modules=modules, device="cpu", **options).save(str(out))
    return out
