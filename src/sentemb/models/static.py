"""Static embedding models: one vector per token, a text's vector is the mean of its tokens' rows.

Two folder layouts hold them, each read by the rules of the library that writes it:

- sentence-transformers (``StaticEmbedding`` module, its folder's ``model.safetensors`` holds
  ``embedding.weight``): the tokens of a text without special tokens, unknown tokens included,
  no length cap unless the folder's ``tokenizer.json`` sets a truncation; Dense and Normalize modules
  may follow.
- model2vec (``model.safetensors`` holds ``embeddings``, optionally a vocabulary-quantised ``mapping``
  (token id -> row) and per-token ``weights``; ``config.json`` says ``normalize`` and ``max_length``):
  the text is cut at ``max_length * median token length`` characters, tokenised without special
  tokens, cut at ``max_length`` tokens (512 unless the config says otherwise; ``null``: no cap), and
  unknown tokens are left out of the mean, as ``StaticModel.encode`` does.

The ``mapping`` and ``weights`` are folded into one float32 row per token id when the table is
loaded (as sentence-transformers does), so inference is one lookup and one mean.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sentemb.errors import ModelNotFoundError, UnsupportedModelError

ST_KEY = "embedding.weight"
M2V_KEY = "embeddings"
ST_RULES = "sentence-transformers"
M2V_RULES = "model2vec"
TABLE_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
# "No cap": what model2vec writes as seq_length; a static model has no position embeddings to run out of.
NO_LIMIT = 1_000_000
# model2vec's StaticModel cuts texts at this many tokens when its config names no max_length.
M2V_MAX_LENGTH = 512


@dataclass(frozen=True)
class StaticTable:
    """Where a static model's table and tokenizer are, and the rules its library embeds by."""

    folder: Path  # holds model.safetensors and tokenizer.json
    rules: str  # ST_RULES or M2V_RULES
    rows: int  # rows of the stored table (clusters, for a vocabulary-quantised model2vec table)
    width: int  # numbers per row
    vocab_size: int
    drop_unk: bool  # model2vec leaves the unknown token out of the mean
    chars_per_token: int | None  # model2vec cuts a text at max_length * this many characters first

    @property
    def table_path(self) -> Path:
        return self.folder / TABLE_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.folder / TOKENIZER_FILE


def is_model2vec_folder(root: Path) -> bool:
    """A folder model2vec wrote without modules.json: config.json with model_type "model2vec", or with no
    model_type at all (a StaticModel made without a config) beside an ``embeddings`` table."""
    path = root / "config.json"
    if (root / "modules.json").is_file() or not path.is_file():
        return False
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(config, dict) or config.get("model_type", "model2vec") != "model2vec":
        return False
    if config.get("model_type") == "model2vec":
        return True
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(root / TABLE_FILE), framework="numpy") as handle:
            return M2V_KEY in handle.keys()  # noqa: SIM118
    except (SafetensorError, OSError):  # no table, or not safetensors: not a model2vec folder
        return False


def read_static_table(folder: Path) -> tuple[StaticTable, int]:
    """The table's facts and the longest input (tokens) its rules read; refuses a damaged folder,
    naming the file. Reads only the tensors' headers and the tokenizer, not the table."""
    from safetensors import SafetensorError, safe_open
    from tokenizers import Tokenizer

    tokenizer_path = folder / TOKENIZER_FILE
    table_path = folder / TABLE_FILE
    if not tokenizer_path.is_file():
        raise ModelNotFoundError(
            f"{tokenizer_path} is missing: a static embedding model needs the tokenizer its table was made "
            "for beside model.safetensors; copy it from the model the table came from"
        )
    if not table_path.is_file():
        raise ModelNotFoundError(
            f"{table_path} is missing: a static embedding model needs its table as safetensors "
            "(sentence-transformers: save with safe_serialization=True)"
        )
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    except Exception as exc:  # the tokenizers library raises a bare Exception on a malformed file
        raise ModelNotFoundError(f"cannot read {tokenizer_path}: {exc}") from None
    try:
        with safe_open(str(table_path), framework="numpy") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise ModelNotFoundError(f"cannot read {table_path}: {exc}") from None
    key = ST_KEY if ST_KEY in shapes else M2V_KEY
    if key not in shapes:
        raise ModelNotFoundError(
            f"{table_path} holds {sorted(shapes)}, not a static table ({ST_KEY!r} as sentence-transformers "
            f"writes it, or {M2V_KEY!r} as model2vec does)"
        )
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    _check_shapes(table_path, tokenizer_path, shapes, key, vocab)
    rows, width = shapes[key]
    if key == ST_KEY:
        truncation = tokenizer.truncation
        if truncation and str(truncation.get("direction", "right")).lower() != "right":
            raise UnsupportedModelError(
                f"{tokenizer_path} truncates from the {truncation['direction']}; sentemb keeps a text's first "
                "tokens only: set its truncation direction to Right (or remove the truncation)"
            )
        limit = int(truncation["max_length"]) if truncation else NO_LIMIT
        return StaticTable(folder, ST_RULES, rows, width, vocab, False, None), limit
    config_path = folder / "config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    max_length = config.get("max_length", M2V_MAX_LENGTH)
    tokens = tokenizer.get_vocab(with_added_tokens=True)
    chars = int(np.median([len(token) for token in tokens]))
    table = StaticTable(folder, M2V_RULES, rows, width, vocab, True, chars)
    return table, int(max_length) if max_length else NO_LIMIT


def _check_shapes(
    table_path: Path, tokenizer_path: Path, shapes: dict[str, tuple[int, ...]], key: str, vocab: int
) -> None:
    table = shapes[key]
    if len(table) != 2 or 0 in table:
        raise ModelNotFoundError(f"{table_path}: {key!r} has shape {table}, not (tokens, dim); the file is damaged")
    mapping, weights = shapes.get("mapping"), shapes.get("weights")
    if mapping is None and table[0] != vocab:
        raise ModelNotFoundError(
            f"{table_path}: {key!r} has {table[0]} rows but {tokenizer_path} has {vocab} tokens; the table and "
            "the tokenizer do not belong together"
        )
    for name, shape in (("mapping", mapping), ("weights", weights)):
        if shape is not None and shape != (vocab,):
            raise ModelNotFoundError(
                f"{table_path}: {name!r} has shape {shape}, expected ({vocab},), one per token of {tokenizer_path}"
            )


def char_cap(table: StaticTable | None, max_length: int, max_chars: int | None, truncates: bool) -> int | None:
    """Characters read per text: ``max_chars``; for a model2vec model that truncates, also model2vec's own
    cut at max_length * (its median token length) characters, made before tokenising."""
    if table is None or table.chars_per_token is None or not truncates or max_length >= NO_LIMIT:
        return max_chars
    own = max_length * table.chars_per_token
    return own if max_chars is None else min(own, max_chars)


def load_table(table: StaticTable) -> np.ndarray:
    """The (vocab_size, width) float32 table, with a model2vec ``mapping`` and ``weights`` folded in:
    row i is ``embeddings[mapping[i]] * weights[i]``, what model2vec averages for token i."""
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(table.table_path))
    except (TypeError, ValueError) as exc:  # e.g. bf16, which numpy cannot hold
        raise ModelNotFoundError(f"cannot read {table.table_path} with numpy: {exc}; save it as float32") from None
    rows = tensors[ST_KEY if table.rules == ST_RULES else M2V_KEY]
    mapping, weights = tensors.get("mapping"), tensors.get("weights")
    if mapping is not None:
        if mapping.size and (int(mapping.min()) < 0 or int(mapping.max()) >= len(rows)):
            raise ModelNotFoundError(
                f"{table.table_path}: 'mapping' points outside the {len(rows)} rows of 'embeddings'; "
                "the file is damaged"
            )
        rows = rows[mapping.astype(np.int64)]
    if weights is not None:
        return (rows.astype(np.float64) * weights.astype(np.float64)[:, None]).astype(np.float32)
    return np.ascontiguousarray(rows, dtype=np.float32)


def write_static_folder(
    out: Path, table: np.ndarray, tokenizer_json: str, *, normalize: bool, config: dict[str, object]
) -> Path:
    """Write a folder that model2vec (``StaticModel.from_pretrained``), sentence-transformers
    (``StaticEmbedding``) and sentemb all load with the same vectors: model2vec's own layout
    (``embeddings`` float32, ``tokenizer.json``, ``config.json``, ``modules.json``)."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({M2V_KEY: np.ascontiguousarray(table, dtype=np.float32)}, str(out / TABLE_FILE))
    (out / TOKENIZER_FILE).write_text(tokenizer_json, encoding="utf-8")
    facts = {
        "model_type": "model2vec", "architectures": ["StaticModel"], **config, "hidden_dim": int(table.shape[1]),
        "normalize": normalize, "embedding_dtype": "float32",
    }  # fmt: skip
    _write_json(out / "config.json", facts)
    modules: list[dict[str, object]] = [
        {"idx": 0, "name": "0", "path": ".", "type": "sentence_transformers.models.StaticEmbedding"}
    ]
    normalize_dir = out / "1_Normalize"
    if normalize:
        modules.append({"idx": 1, "name": "1", "path": "1_Normalize", "type": "sentence_transformers.models.Normalize"})
        normalize_dir.mkdir(exist_ok=True)
    elif normalize_dir.is_dir():
        shutil.rmtree(normalize_dir)
    _write_json(out / "modules.json", modules)
    return out


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelNotFoundError(f"{path} is not a JSON object")
    return data


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
