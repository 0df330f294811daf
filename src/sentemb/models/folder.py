"""Read and write model folders: the sentence-transformers layout (modules.json with Transformer,
Pooling, Dense and Normalize modules, sentence_bert_config.json, config_sentence_transformers.json),
a plain transformers folder, or a static embedding model (:mod:`sentemb.models.static`)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sentemb.config import Pooling
from sentemb.errors import ConfigError, ModelNotFoundError, UnsafeModelError
from sentemb.models.modules import (
    ACTIVATION_NAMES,
    LEGACY_POOLING_KEYS,
    ST_POOLING_NAMES,
    DenseLayer,
    Pipeline,
    check_backbone_width,
    hidden_width,
    read_json,
    read_pipeline,
)
from sentemb.models.prebuilt import has_graph
from sentemb.models.sparse import SparseLayout, check_fill_mask, is_sparse, max_active_dims_of, read_sparse_layout
from sentemb.models.static import (
    M2V_RULES,
    NO_LIMIT,
    ST_KEY,
    TOKENIZER_FILE,
    StaticTable,
    is_model2vec_folder,
    load_table,
    read_static_table,
    write_static_folder,
)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SIMILARITY_FNS = ("cosine", "dot", "euclidean", "manhattan")
# Files sentence-transformers writes around the transformer; never copied as model files.
_ST_FILES = {"modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "README.md"}


@dataclass(frozen=True)
class StConfig:
    """What config_sentence_transformers.json says: prompts, the default prompt, similarity, truncation.

    As sentence-transformers 5+, ``prompts`` always holds "query" and "document" ("" unless set).
    """

    prompts: tuple[tuple[str, str], ...] = (("query", ""), ("document", ""))
    default_prompt_name: str | None = None
    similarity_fn_name: str = "cosine"
    truncate_dim: int | None = None

    @property
    def prompt_dict(self) -> dict[str, str]:
        return dict(self.prompts)


@dataclass(frozen=True)
class ModelSpec:
    """What a model folder says about how to embed with it."""

    root: Path  # the folder the user named
    transformer_dir: Path  # where config.json, weights and tokenizer live
    model_type: str
    pooling: Pooling
    normalize: bool
    max_length: int
    lowercase: bool
    limit: int  # the longest input (tokens) the model's position embeddings allow
    weights: tuple[Path, ...]
    pickle_weights: bool
    include_prompt: bool = True  # False: prompt tokens are left out of pooling
    dense: tuple[DenseLayer, ...] = ()  # Dense modules after pooling, in order
    st: StConfig = field(default_factory=StConfig)
    # What the folder's model computes: "embedding" (feature extraction), "rerank" (a cross-encoder: a
    # sequence-classification head scoring text pairs) or "sparse" (a fill-mask head, SPLADE).
    task: str = "embedding"
    architectures: tuple[str, ...] = ()  # config.json's, e.g. ("BertForSequenceClassification",)
    labels: int = 0  # a classification head's outputs (config.json's id2label)
    activation: str | None = None  # the cross-encoder's saved activation (a dotted path), None: its default
    sparse: SparseLayout | None = None  # a SparseEncoder's SPLADE pooling and Router routes
    max_active_dims: int | None = None  # a SparseEncoder's saved top-k per vector

    @property
    def width(self) -> int:
        """Numbers per vector before ``truncate_dim``: the last Dense layer's, else the transformer's width."""
        if self.dense:
            return self.dense[-1].out_features
        return self.static.width if self.static is not None else hidden_width(self.transformer_dir / "config.json")
    static: StaticTable | None = None  # a static embedding model: a table lookup instead of a transformer


def read_model_folder(root: Path, *, allow_pickle: bool = False, trust_remote_code: bool = False) -> ModelSpec:
    """Read a model folder and refuse what is unsafe without the matching opt-in, or not implemented."""
    pipeline, sparse = _read_modules(root, allow_pickle)
    if pipeline.static or is_model2vec_folder(root):
        return _read_static(root, pipeline)
    transformer_dir = root / pipeline.transformer_path
    if not (transformer_dir / "config.json").is_file():
        raise ModelNotFoundError(
            f"{transformer_dir} has no config.json: it is not a transformers or sentence-transformers model folder"
        )
    config = read_json(transformer_dir / "config.json")
    if config.get("auto_map") and not trust_remote_code:
        raise UnsafeModelError(
            f"{root} needs custom code from the model repository (config.json has auto_map); "
            "pass trust_remote_code=True (CLI: --trust-remote-code) only if you trust its author"
        )
    safe = tuple(sorted(transformer_dir.glob("*.safetensors")))
    pickled = tuple(p for p in sorted(transformer_dir.iterdir()) if p.suffix in PICKLE_SUFFIXES and not _ir_weights(p))
    if not safe and not pickled and not has_graph(transformer_dir):
        raise ModelNotFoundError(f"{transformer_dir} holds no weights (*.safetensors)")
    if pickled and not safe and not allow_pickle:
        raise UnsafeModelError(
            f"{transformer_dir} has only pickle weights ({', '.join(p.name for p in pickled)}), which can run "
            "arbitrary code when loaded; convert them to safetensors, or pass allow_pickle=True "
            "(CLI: --allow-pickle) only if you trust the source"
        )

    st_config_path = transformer_dir / "sentence_bert_config.json"
    if not st_config_path.is_file():
        st_config_path = root / "sentence_bert_config.json"
    st_config = read_json(st_config_path) if st_config_path.is_file() else {}
    limit = _model_limit(transformer_dir, config)
    max_length = min(int(st_config.get("max_seq_length") or limit), limit)
    saved = root / "config_sentence_transformers.json"
    st_model = read_json(saved) if saved.is_file() else {}
    if sparse is not None:
        check_fill_mask(root, sparse, st_config)
    return ModelSpec(
        root=root,
        transformer_dir=transformer_dir,
        model_type=str(config.get("model_type", "unknown")),
        pooling=pipeline.pooling or Pooling.MEAN,
        normalize=pipeline.normalize,
        max_length=max_length,
        lowercase=bool(st_config.get("do_lower_case", False)),
        limit=limit,
        weights=safe or pickled,
        pickle_weights=bool(pickled) and not safe,
        include_prompt=pipeline.include_prompt,
        dense=pipeline.dense,
        st=_read_st_config(root),
        task="sparse" if sparse is not None else _task(st_model, st_config),
        architectures=tuple(str(a) for a in config.get("architectures") or ()),
        labels=len(config.get("id2label") or {}) or int(config.get("num_labels") or 2),
        activation=_activation(st_model, config),
        sparse=sparse,
        max_active_dims=max_active_dims_of(st_model, saved),
    )


def _read_modules(root: Path, allow_pickle: bool) -> tuple[Pipeline, SparseLayout | None]:
    """modules.json read as an embedding model's pipeline, or as a SparseEncoder's layout."""
    modules = read_json(root / "modules.json") if (root / "modules.json").is_file() else []
    modules = modules if isinstance(modules, list) else []
    saved = root / "config_sentence_transformers.json"
    if is_sparse(modules, read_json(saved).get("model_type") if saved.is_file() else None):
        sparse = read_sparse_layout(root, modules)
        return Pipeline(sparse.transformer_path, None, True, (), False), sparse
    return read_pipeline(root, modules, allow_pickle=allow_pickle), None


def _task(st_model: dict, st_config: dict) -> str:
    """What sentence-transformers would load the folder as: its saved model type, else the Transformer
    module's task; a plain transformers folder is an embedding model (as SentenceTransformer loads it)."""
    kind = st_model.get("model_type")
    task = st_config.get("transformer_task")
    if kind == "CrossEncoder" or task == "sequence-classification":
        return "rerank"
    if kind == "SparseEncoder" or task == "fill-mask":
        return "sparse"
    return "embedding"


def _activation(st_model: dict, config: dict) -> str | None:
    """The cross-encoder's saved activation, where sentence-transformers looks for it: its own config
    (5+), else config.json's ``sentence_transformers.activation_fn`` (4), else the key of 2-3."""
    saved = st_model.get("activation_fn")
    if saved is None and isinstance(config.get("sentence_transformers"), dict):
        saved = config["sentence_transformers"].get("activation_fn")
    if saved is None:
        saved = config.get("sbert_ce_default_activation_function")
    return str(saved) if saved is not None else None


def _ir_weights(path: Path) -> bool:
    """Whether ``path`` is the weights of an OpenVINO IR beside it (model.bin of model.xml), not a pickle."""
    return path.suffix == ".bin" and path.with_suffix(".xml").is_file()


def _read_static(root: Path, pipeline: Pipeline) -> ModelSpec:
    """A static embedding model: its table and tokenizer, then the Dense and Normalize modules that follow."""
    table, limit = read_static_table(root / pipeline.transformer_path)
    check_backbone_width(root, table.width, pipeline.dense)
    normalize = pipeline.normalize
    if table.rules == M2V_RULES:  # model2vec's own setting decides, as StaticModel.encode reads it
        config_path = table.folder / "config.json"
        normalize = bool(read_json(config_path).get("normalize", False)) if config_path.is_file() else normalize
    return ModelSpec(
        root=root,
        transformer_dir=table.folder,
        model_type=table.rules if table.rules == M2V_RULES else "static",
        pooling=Pooling.MEAN,
        normalize=normalize,
        max_length=limit,
        lowercase=False,
        limit=NO_LIMIT,  # no position embeddings: any max_length is fine
        weights=(table.table_path,),
        pickle_weights=False,
        dense=pipeline.dense,
        st=_read_st_config(root),
        static=table,
    )


def _read_st_config(root: Path) -> StConfig:
    """config_sentence_transformers.json, read as sentence-transformers reads it."""
    path = root / "config_sentence_transformers.json"
    data = read_json(path) if path.is_file() else {}
    prompts = {"query": "", "document": ""}
    raw = data.get("prompts") or {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ModelNotFoundError(f"{path}: 'prompts' must map names to strings, got {raw!r}")
    prompts.update({str(k): v for k, v in raw.items()})
    default = data.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ConfigError(f"{path}: default_prompt_name {default!r} is not one of its prompts {sorted(prompts)}")
    similarity = data.get("similarity_fn_name")
    truncate = data.get("truncate_dim")
    return StConfig(
        prompts=tuple(prompts.items()),
        default_prompt_name=default,
        # Like sentence-transformers: a name it does not support (e.g. "maxsim") falls back to cosine.
        similarity_fn_name=similarity if similarity in SIMILARITY_FNS else "cosine",
        truncate_dim=int(truncate) if truncate else None,
    )


def _model_limit(transformer_dir: Path, config: dict) -> int:
    """The longest input the model takes: tokenizer's model_max_length or position embeddings."""
    limits = []
    tok_config = transformer_dir / "tokenizer_config.json"
    if tok_config.is_file():
        value = read_json(tok_config).get("model_max_length")
        if isinstance(value, int) and 0 < value < 1_000_000:
            limits.append(value)
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        limits.append(
            positions - 2 if config.get("model_type") in ("roberta", "xlm-roberta", "camembert") else positions
        )
    return min(limits) if limits else 512


@dataclass(frozen=True)
class SavePlan:
    """What :func:`write_st_folder` writes around the transformer's files."""

    pooling: Pooling
    include_prompt: bool
    normalize: bool
    max_length: int
    width: int  # the transformer's output width (what Pooling takes)
    dense: tuple[DenseLayer, ...]
    st: StConfig


def write_st_folder(spec: ModelSpec, out: Path, plan: SavePlan) -> Path:
    """Write a sentence-transformers folder: the transformer files of ``spec`` plus every module."""
    out.mkdir(parents=True, exist_ok=True)
    for item in spec.transformer_dir.iterdir():
        skip = (
            item.name in _ST_FILES
            or item.suffix == ".onnx"
            or (item.suffix in PICKLE_SUFFIXES and not spec.pickle_weights)
        )
        if item.is_file() and not skip:
            shutil.copy2(item, out / item.name)
    _write_modules(out, [_module(0, "", "Transformer"), _module(1, "1_Pooling", "Pooling")], plan)
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": plan.max_length, "do_lower_case": spec.lowercase})
    mode = ST_POOLING_NAMES[plan.pooling]
    pool_config: dict[str, object] = {"word_embedding_dimension": plan.width}
    pool_config |= {key: name == mode for key, name in LEGACY_POOLING_KEYS.items()}  # every ST release reads these
    pool_config["include_prompt"] = plan.include_prompt
    (out / "1_Pooling").mkdir(exist_ok=True)
    _write_json(out / "1_Pooling" / "config.json", pool_config)
    _write_st_config(out, plan.st)
    return out


def write_static_model(spec: ModelSpec, out: Path, plan: SavePlan) -> Path:
    """Write a static model by its library's rules, so that sentemb reads it back the same: model2vec's
    layout for a model2vec model without Dense layers, else sentence-transformers' (0_StaticEmbedding,
    Dense, Normalize); prompts, similarity and truncate_dim go to config_sentence_transformers.json."""
    if spec.static is None:
        raise ConfigError(f"{spec.root} is not a static embedding model")
    if plan.pooling is not Pooling.MEAN:
        raise ConfigError(
            f"a static embedding model is saved with mean pooling (sentence-transformers' StaticEmbedding knows no "
            f"other); load it without pooling={plan.pooling.value!r} to save it"
        )
    tokenizer = (spec.static.tokenizer_path).read_text(encoding="utf-8")
    if spec.static.rules == M2V_RULES and not plan.dense:
        max_length = None if plan.max_length >= NO_LIMIT else plan.max_length
        write_static_folder(out, load_table(spec.static), tokenizer, normalize=plan.normalize,
                            config={"max_length": max_length})  # fmt: skip
        _write_st_config(out, plan.st)
        return out
    from safetensors.numpy import save_file

    table_dir = out / "0_StaticEmbedding"
    table_dir.mkdir(parents=True, exist_ok=True)
    save_file({ST_KEY: load_table(spec.static)}, str(table_dir / "model.safetensors"))
    (table_dir / TOKENIZER_FILE).write_text(tokenizer, encoding="utf-8")
    _write_modules(out, [_module(0, "0_StaticEmbedding", "StaticEmbedding")], plan)
    _write_st_config(out, plan.st)
    return out


def _write_modules(out: Path, modules: list[dict], plan: SavePlan) -> None:
    """modules.json: ``modules`` (the first ones), then a folder per Dense layer and Normalize (stale ones
    of an earlier save removed)."""
    for stale in [*out.glob("[0-9]*_Dense"), *out.glob("[0-9]*_Normalize")]:
        shutil.rmtree(stale)
    for layer in plan.dense:
        path = f"{len(modules)}_Dense"
        modules.append(_module(len(modules), path, "Dense"))
        _write_dense(layer, out / path)
    if plan.normalize:
        path = f"{len(modules)}_Normalize"
        modules.append(_module(len(modules), path, "Normalize"))
        (out / path).mkdir()
    _write_json(out / "modules.json", modules)


def _write_st_config(out: Path, st: StConfig) -> None:
    st_config: dict[str, object] = {
        "model_type": "SentenceTransformer",
        "prompts": st.prompt_dict,
        "default_prompt_name": st.default_prompt_name,
        "similarity_fn_name": st.similarity_fn_name,
    }
    if st.truncate_dim is not None:
        st_config["truncate_dim"] = st.truncate_dim
    _write_json(out / "config_sentence_transformers.json", st_config)


def _module(idx: int, path: str, kind: str) -> dict[str, object]:
    return {"idx": idx, "name": str(idx), "path": path, "type": f"sentence_transformers.models.{kind}"}


def _write_dense(layer: DenseLayer, folder: Path) -> None:
    from safetensors.numpy import save_file

    folder.mkdir()
    config: dict[str, object] = {
        "in_features": layer.in_features,
        "out_features": layer.out_features,
        "bias": layer.bias is not None,
        "activation_function": ACTIVATION_NAMES[layer.activation],
    }
    tensors = {"linear.weight": layer.weight}
    if layer.bias is not None:
        tensors["linear.bias"] = layer.bias
    if layer.use_residual:
        config["use_residual"] = True
        if layer.residual is not None:
            tensors["residual.weight"] = layer.residual
    _write_json(folder / "config.json", config)
    save_file(tensors, str(folder / "model.safetensors"))


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
