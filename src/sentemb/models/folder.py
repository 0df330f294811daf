"""Read and write model folders: sentence-transformers layout (modules.json,
sentence_bert_config.json, 1_Pooling/config.json, 2_Normalize) or a plain transformers folder."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from sentemb.config import Pooling
from sentemb.errors import ModelNotFoundError, UnsafeModelError
from sentemb.models.prebuilt import has_graph

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_POOLING_KEYS = {
    "pooling_mode_mean_tokens": Pooling.MEAN,
    "pooling_mode_cls_token": Pooling.CLS,
    "pooling_mode_max_tokens": Pooling.MAX,
    "pooling_mode_mean_sqrt_len_tokens": Pooling.MEAN_SQRT_LEN,
}
# Files sentence-transformers writes around the transformer; never copied as model files.
_ST_FILES = {"modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "README.md"}


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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot read {path}: {exc}") from None


def read_model_folder(root: Path, *, allow_pickle: bool = False, trust_remote_code: bool = False) -> ModelSpec:
    """Read a model folder and refuse what is unsafe without the matching opt-in."""
    modules = _read_json(root / "modules.json") if (root / "modules.json").is_file() else []
    types = {m.get("type", "").rsplit(".", 1)[-1]: m.get("path", "") for m in modules}
    transformer_dir = root / types.get("Transformer", "")
    if not (transformer_dir / "config.json").is_file():
        raise ModelNotFoundError(
            f"{transformer_dir} has no config.json: it is not a transformers or sentence-transformers model folder"
        )
    config = _read_json(transformer_dir / "config.json")
    if config.get("auto_map") and not trust_remote_code:
        raise UnsafeModelError(
            f"{root} needs custom code from the model repository (config.json has auto_map); "
            "pass trust_remote_code=True (CLI: --trust-remote-code) only if you trust its author"
        )
    safe = tuple(sorted(transformer_dir.glob("*.safetensors")))
    pickled = tuple(p for p in sorted(transformer_dir.iterdir()) if p.suffix in PICKLE_SUFFIXES)
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
    st_config = _read_json(st_config_path) if st_config_path.is_file() else {}
    pooling = Pooling.MEAN
    if "Pooling" in types:
        pool_config = _read_json(root / types["Pooling"] / "config.json")
        pooling = _pooling_from_config(pool_config, root)
    limit = _model_limit(transformer_dir, config)
    max_length = min(int(st_config.get("max_seq_length") or limit), limit)
    return ModelSpec(
        root=root,
        transformer_dir=transformer_dir,
        model_type=str(config.get("model_type", "unknown")),
        pooling=pooling,
        normalize="Normalize" in types,
        max_length=max_length,
        lowercase=bool(st_config.get("do_lower_case", False)),
        limit=limit,
        weights=safe or pickled,
        pickle_weights=bool(pickled) and not safe,
    )


def _pooling_from_config(pool_config: dict, root: Path) -> Pooling:
    if "pooling_mode" in pool_config:  # sentence-transformers >= 5 may write one string
        names = {"mean": Pooling.MEAN, "cls": Pooling.CLS, "max": Pooling.MAX}
        names["mean_sqrt_len_tokens"] = Pooling.MEAN_SQRT_LEN
        mode = pool_config["pooling_mode"]
        if mode in names:
            return names[mode]
        raise ModelNotFoundError(f"{root}: pooling mode {mode!r} is not supported (mean, cls, max, mean_sqrt_len)")
    chosen = [mode for key, mode in _POOLING_KEYS.items() if pool_config.get(key)]
    unsupported = [k for k, v in pool_config.items() if k.startswith("pooling_mode") and v and k not in _POOLING_KEYS]
    if len(chosen) != 1 or unsupported:
        raise ModelNotFoundError(
            f"{root}: the pooling config asks for {chosen + unsupported}; sentemb supports exactly one of "
            "mean, cls, max, mean_sqrt_len"
        )
    return chosen[0]


def _model_limit(transformer_dir: Path, config: dict) -> int:
    """The longest input the model takes: tokenizer's model_max_length or position embeddings."""
    limits = []
    tok_config = transformer_dir / "tokenizer_config.json"
    if tok_config.is_file():
        value = _read_json(tok_config).get("model_max_length")
        if isinstance(value, int) and 0 < value < 1_000_000:
            limits.append(value)
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        limits.append(
            positions - 2 if config.get("model_type") in ("roberta", "xlm-roberta", "camembert") else positions
        )
    return min(limits) if limits else 512


def write_st_folder(
    spec: ModelSpec, out: Path, *, pooling: Pooling, normalize: bool, max_length: int, dim: int
) -> Path:
    """Write a sentence-transformers folder: the transformer files of ``spec`` plus module configs."""
    out.mkdir(parents=True, exist_ok=True)
    for item in spec.transformer_dir.iterdir():
        skip = (
            item.name in _ST_FILES
            or item.suffix == ".onnx"
            or (item.suffix in PICKLE_SUFFIXES and not spec.pickle_weights)
        )
        if item.is_file() and not skip:
            shutil.copy2(item, out / item.name)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (out / "2_Normalize").mkdir(exist_ok=True)
    elif (out / "2_Normalize").exists():
        shutil.rmtree(out / "2_Normalize")
    _write_json(out / "modules.json", modules)
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": spec.lowercase})
    pool_config: dict[str, object] = {key: mode is pooling for key, mode in _POOLING_KEYS.items()}
    pool_config["word_embedding_dimension"] = dim
    (out / "1_Pooling").mkdir(exist_ok=True)
    _write_json(out / "1_Pooling" / "config.json", pool_config)
    return out


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
