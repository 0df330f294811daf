"""The modules of a sentence-transformers ``SparseEncoder`` folder, read all or nothing.

sentemb runs two layouts, as sentence-transformers 5-6 saves them:

    [Transformer (fill-mask) or MLMTransformer, SpladePooling]            SPLADE
    [Router] with routes query: [SparseStaticEmbedding]                    inference-free SPLADE
                         document: [Transformer (fill-mask), SpladePooling]

Any other module (a SparseAutoEncoder, a Dense layer, another route) is refused by name with
:class:`UnsupportedModelError`: dropping it would change the vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sentemb.errors import ModelNotFoundError, UnsupportedModelError
from sentemb.models.modules import read_json

SPLADE_POOLING = ("max", "sum")
SPLADE_ACTIVATIONS = ("relu", "log1p_relu")
# The module types a sparse folder may hold, by their class name.
TRANSFORMERS = ("Transformer", "MLMTransformer")
SUPPORTED_SPARSE = (
    "[Transformer (fill-mask) or MLMTransformer, SpladePooling], or a Router whose query route is "
    "[SparseStaticEmbedding] and whose document route is [Transformer (fill-mask), SpladePooling]"
)
ROUTES = ("query", "document")


@dataclass(frozen=True)
class Splade:
    """SpladePooling's settings: ``pooling`` over tokens of ``activation`` on the MLM logits."""

    pooling: str = "max"  # "max" or "sum"
    activation: str = "relu"  # "relu": log1p(relu(x)); "log1p_relu": log1p(log1p(relu(x)))


@dataclass(frozen=True, eq=False)
class StaticWeights:
    """SparseStaticEmbedding: a weight per vocabulary id; a text's vector is the weight of each id it holds."""

    folder: Path  # its tokenizer lives here
    weight: np.ndarray  # (vocab,) float32


@dataclass(frozen=True)
class SparseLayout:
    """What a sparse folder's modules say: where the transformer is, its pooling, and the Router's routes."""

    transformer_path: str  # the MLM transformer's folder, relative to the model folder
    splade: Splade
    transformer_kind: str  # "Transformer" (its task must be fill-mask) or "MLMTransformer"
    query: StaticWeights | None = None  # a Router's inference-free query route
    default_route: str = "document"  # the route encode() takes when no task is named


def is_sparse(modules: list[dict], model_type: object) -> bool:
    """Whether ``modules.json`` describes a SparseEncoder: a sparse module in it, or a Router alone in a
    folder that sentence-transformers saved as a SparseEncoder (``model_type``)."""
    names = {_kind(m) for m in modules}
    if names & {"SpladePooling", "MLMTransformer", "SparseStaticEmbedding", "SparseAutoEncoder"}:
        return True
    return names == {"Router"} and model_type == "SparseEncoder"


def _kind(module: dict) -> str:
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def read_sparse_layout(root: Path, modules: list[dict]) -> SparseLayout:
    """The layout of a SparseEncoder folder; UnsupportedModelError naming any module sentemb does not run."""
    if len(modules) == 1 and _kind(modules[0]) == "Router":
        return _read_router(root, root / str(modules[0].get("path", "")))
    chain = [(_kind(m), str(m.get("path", ""))) for m in modules]
    transformer_path, splade = _read_chain(root, chain, "")
    return SparseLayout(transformer_path, splade, chain[0][0])


def _refuse(root: Path, what: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{root}: {what}, which sentemb does not run; it runs {SUPPORTED_SPARSE}. "
        "Use sentence-transformers' SparseEncoder for this model."
    )


def _read_chain(root: Path, chain: list[tuple[str, str]], route: str) -> tuple[str, Splade]:
    """A [Transformer, SpladePooling] chain: the transformer's folder and the pooling's settings."""
    kinds = [kind for kind, _ in chain]
    if len(chain) != 2 or kinds[0] not in TRANSFORMERS or kinds[1] != "SpladePooling":
        where = f"the {route} route" if route else "modules.json"
        raise _refuse(root, f"{where} holds {kinds}")
    return chain[0][1], _read_splade(root / chain[1][1])


def _read_splade(folder: Path) -> Splade:
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    pooling = config.get("pooling_strategy", "max")
    activation = config.get("activation_function", "relu")
    if pooling not in SPLADE_POOLING or activation not in SPLADE_ACTIVATIONS:
        raise UnsupportedModelError(
            f"{folder}: SpladePooling with pooling_strategy={pooling!r}, activation_function={activation!r}; "
            f"sentemb runs pooling {SPLADE_POOLING} and activations {SPLADE_ACTIVATIONS}"
        )
    return Splade(str(pooling), str(activation))


def _read_router(root: Path, folder: Path) -> SparseLayout:
    """A Router: an inference-free query route and a SPLADE document route."""
    config = read_json(folder / "router_config.json")
    types = {str(name): str(kind).rsplit(".", 1)[-1] for name, kind in (config.get("types") or {}).items()}
    structure = config.get("structure") or {}
    params = config.get("parameters") or {}
    if sorted(structure) != sorted(ROUTES) or params.get("route_mappings"):
        raise _refuse(root, f"its Router has routes {sorted(structure)} and mappings {params.get('route_mappings')}")
    query = [(types.get(name, name), name) for name in structure["query"]]
    if [kind for kind, _ in query] != ["SparseStaticEmbedding"]:
        raise _refuse(root, f"the query route holds {[kind for kind, _ in query]}")
    prefix = "" if folder == root else f"{folder.relative_to(root)}/"
    document = [(types.get(name, name), prefix + name) for name in structure["document"]]
    transformer_path, splade = _read_chain(root, document, "document")
    default = params.get("default_route")
    if default is None and params.get("allow_empty_key", True):
        default = next(iter(structure))
    if default not in ROUTES:
        raise _refuse(root, f"its Router's default route is {default!r}")
    weights = read_static_weights(folder / query[0][1])
    return SparseLayout(transformer_path, splade, document[0][0], weights, str(default))


def read_static_weights(folder: Path) -> StaticWeights:
    """A SparseStaticEmbedding folder: its ``weight`` vector (model.safetensors) and tokenizer."""
    path = folder / "model.safetensors"
    if not path.is_file():
        raise ModelNotFoundError(f"{folder} holds no SparseStaticEmbedding weights (model.safetensors)")
    if not (folder / "tokenizer.json").is_file():
        raise ModelNotFoundError(f"{folder} has no tokenizer.json for its SparseStaticEmbedding")
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    weight = tensors.get("weight")
    if weight is None or weight.ndim != 1 or set(tensors) != {"weight"}:
        shapes = {key: value.shape for key, value in tensors.items()}
        raise UnsupportedModelError(f"{path}: expected one 1-D 'weight' (a weight per token id), found {shapes}")
    return StaticWeights(folder, weight.astype(np.float32))


def check_fill_mask(root: Path, layout: SparseLayout, st_config: dict) -> None:
    """SpladePooling reads MLM logits: a plain Transformer before it must have the fill-mask task."""
    task = st_config.get("transformer_task", "feature-extraction")
    if layout.transformer_kind == "Transformer" and task != "fill-mask":
        raise _refuse(root, f"its Transformer has the task {task!r} before SpladePooling (fill-mask expected)")


def max_active_dims_of(st_model: dict, path: Path) -> int | None:
    """config_sentence_transformers.json's ``max_active_dims``: None or a whole number >= 1."""
    value = st_model.get("max_active_dims")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelNotFoundError(f"{path}: max_active_dims must be a whole number of at least 1, got {value!r}")
    return int(value)
