"""Make a static embedding model from any model sentemb loads, the way model2vec's ``distill`` does.

1. the vocabulary: the model's own tokens (less BERT's ``[unusedN]`` and the special tokens), plus
   any extra words (:mod:`sentemb.distillation.vocabulary`);
2. each token through the model alone (its special tokens around it), mean-pooled over all of them,
   on sentemb's backends (torch, ONNX Runtime, OpenVINO: the config's backend and precision);
3. PCA to ``dim`` numbers (eigenvectors of the covariance matrix, each component's sign fixed so
   its largest score is positive), in numpy;
4. each row times ``sif / (sif + p)``, where ``p`` is the token's Zipf probability by its rank in
   the vocabulary (lower ids are taken to be more frequent).

The folder written loads in sentemb, model2vec (``StaticModel.from_pretrained``) and
sentence-transformers (``StaticEmbedding``): :func:`sentemb.models.static.write_static_folder`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sentemb.backends import Backend, create_backend
from sentemb.batching import pad
from sentemb.config import EncoderConfig, LoadOptions, Pooling
from sentemb.distillation.vocabulary import REMOVE_PATTERN, Vocabulary, build_vocabulary
from sentemb.encoder import load_config, progress_bar
from sentemb.errors import ConfigError
from sentemb.heads import Pooled
from sentemb.machine import Machine
from sentemb.models.static import M2V_MAX_LENGTH, NO_LIMIT, write_static_folder
from sentemb.plan import open_model
from sentemb.tokenize import LoadedTokenizer, load_hf_tokenizer

if TYPE_CHECKING:
    from typing_extensions import Unpack

# Tokens per forward batch (model2vec's): each is 1-3 ids long, so batches are small anyway.
BATCH = 256
# model2vec's pooling names for the poolings it distils with.
_POOLINGS = {Pooling.MEAN: "mean", Pooling.CLS: "first", Pooling.LAST_TOKEN: "last"}


def distill(
    model: str | Path,
    out: str | Path,
    *,
    dim: int | None = 256,
    vocabulary: Iterable[str] | None = None,
    sif_coefficient: float | None = 1e-4,
    remove_pattern: str | None = REMOVE_PATTERN,
    config: EncoderConfig | None = None,
    **options: Unpack[LoadOptions],
) -> Path:
    """Write a static embedding model made from ``model`` into the folder ``out`` and return it.

    ``dim``: numbers per vector after PCA (None: no PCA); ``vocabulary``: extra words or phrases;
    ``sif_coefficient`` (None: no weighting) and ``remove_pattern`` as in model2vec's ``distill``.
    ``options`` (or ``config``) choose how the model runs (backend, precision, device, batch_size,
    pooling: mean unless given, as model2vec).
    """
    if dim is not None and dim < 1:
        raise ConfigError(f"dim must be at least 1, got {dim}")
    if sif_coefficient is not None and not 0 < sif_coefficient < 1:
        raise ConfigError(f"sif_coefficient must be between 0 and 1 (model2vec uses 1e-4), got {sif_coefficient}")
    config = load_config(model, config, dict(options))
    pooling = config.pooling or Pooling.MEAN
    if pooling not in _POOLINGS:
        raise ConfigError(f"distill pools each token's outputs by mean, cls or lasttoken (as model2vec); "
                          f"not {pooling.value!r}")  # fmt: skip
    machine = Machine.here()
    _, spec = open_model(config, machine)
    if spec.static is not None:
        raise ConfigError(f"{config.model} is already a static embedding model; distil a transformer model")
    # the transformer's own outputs, pooled as asked (no Dense)
    backend = create_backend(dataclasses.replace(spec, dense=()), config, machine, Pooled(pooling))
    tokenizer = backend.tokenizer or load_hf_tokenizer(str(spec.transformer_dir), config.trust_remote_code)
    core, folder = tokenizer.tokenizer, spec.transformer_dir
    vocab = build_vocabulary(
        core, _unk_token(tokenizer, folder), core.id_to_token(tokenizer.pad_id), remove_pattern,
        words=vocabulary or (), as_saved=_as_saved(folder / "tokenizer.json"),
    )  # fmt: skip
    rows = embed_tokens(backend, tokenizer, vocab, config)
    rows = apply_pca(rows, dim)
    rows = (rows * zipf_weights(len(rows), sif_coefficient)[:, None]).astype(np.float32)
    facts: dict[str, object] = {
        "tokenizer_name": str(model), "apply_pca": dim, "sif_coefficient": sif_coefficient, "seq_length": NO_LIMIT,
        "pooling": _POOLINGS[pooling], "max_length": M2V_MAX_LENGTH,
    }  # fmt: skip
    return write_static_folder(Path(out), rows, vocab.tokenizer_json, normalize=True, config=facts)


def _as_saved(path: Path) -> Any:
    """The model's tokenizer.json as written (padding and truncation included), or None without one."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path)) if path.is_file() else None


def _unk_token(tokenizer: LoadedTokenizer, folder: Path) -> str | None:
    """The unknown token: the tokenizer model's, else the one the folder's tokenizer configs name
    (a byte-level BPE has none of its own; model2vec takes the transformers tokenizer's)."""
    from sentemb.backends.static_backend import unknown_id

    unk = unknown_id(tokenizer.tokenizer)
    if unk is not None:
        return tokenizer.tokenizer.id_to_token(unk)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get("unk_token") if path.is_file() else None
        except (OSError, ValueError, AttributeError):
            value = None
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str) and tokenizer.tokenizer.token_to_id(value) is not None:
            return value
    return None


def embed_tokens(backend: Backend, tokenizer: LoadedTokenizer, vocab: Vocabulary, config: EncoderConfig) -> np.ndarray:
    """Each token's pooled outputs (float32, one row per token), shortest inputs first in batches."""
    inputs = [np.array(ids, dtype=np.int64) for ids in vocab.inputs]
    order = np.argsort([len(ids) for ids in inputs], kind="stable")
    rows = np.zeros((len(inputs), backend.dim), dtype=np.float32)
    size = config.batch_size or BATCH
    progress = _progress(len(inputs), config.show_progress)
    for start in range(0, len(order), size):
        chosen = order[start : start + size]
        ids = [inputs[i] for i in chosen]
        batch = pad(ids, [np.zeros_like(x) for x in ids], tokenizer.pad_id, tokenizer.uses_type_ids)
        rows[chosen] = backend.run(batch)
        if progress is not None:
            progress.update(len(chosen))
    if progress is not None:
        progress.close()
    return np.nan_to_num(rows)


def _progress(total: int, show: bool | None) -> Any:
    return progress_bar(total, show, 0, "token", "distilling")  # on a terminal whatever the vocabulary's size


def zipf_weights(count: int, sif_coefficient: float | None) -> np.ndarray:
    """``sif / (sif + p)`` per row, ``p`` the Zipf probability of rank i + 2 (float64, as model2vec)."""
    if sif_coefficient is None:
        return np.ones(count)
    inv_rank = 1 / np.arange(2, count + 2)
    proba = inv_rank / np.sum(inv_rank)
    return sif_coefficient / (sif_coefficient + proba)


def apply_pca(rows: np.ndarray, dim: int | None) -> np.ndarray:
    """``rows`` projected on their first ``dim`` principal components (all of them when ``dim`` is
    larger than the width; unchanged when it is None or not below the number of rows)."""
    if dim is None:
        return rows
    dim = min(dim, rows.shape[1])
    if dim >= rows.shape[0]:
        return rows
    centred = rows - rows.mean(axis=0)
    covariance = (centred.T @ centred) / (rows.shape[0] - 1)
    _, vectors = np.linalg.eigh(covariance)
    components = vectors[:, ::-1][:, :dim].T
    scores = centred @ components.T
    # eigenvectors have no sign of their own: make each component's largest score positive
    largest = np.argmax(np.abs(scores), axis=0)
    return scores * np.sign(scores[largest, range(scores.shape[1])])


__all__ = ["distill"]
