"""Sparse (SPLADE) models on the command line: the ``--sparse-model`` flags, loading the model with the
runtime flags every command shares, and the sparse vector files `sentemb encode` writes.

A sparse model takes the runtime flags of :class:`~sentemb.config.EncoderConfig` (--backend, --precision,
--device, --max-length, --batch-size, ...), not the dense model's pooling, normalisation, Matryoshka or
long-text flags: SPLADE pools over the vocabulary and cuts texts at the model's length, as
sentence-transformers does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sentemb.cli.common import InputError, UsageError, config_from_options
from sentemb.cli.flags import flags_of
from sentemb.config import EncoderConfig

if TYPE_CHECKING:
    from sentemb.sparse import SparseEncoder

F = TypeVar("F", bound=Callable[..., Any])

# Dense-only flags: refused beside a sparse model rather than silently ignored (--long-text chunk is
# refused by load_sparse itself; truncate and error apply to sparse models too).
DENSE_ONLY = ("pooling", "normalize", "truncate_dim", "chunk_overlap")
# Facts of a sparse model compared when a saved file is searched with the model of today.
COMPARED = ("dim", "sha256", "max_length", "max_active_dims", "precision")


def sparse_options(func: F) -> F:
    """``--sparse-model`` and ``--max-active-dims`` (callback keywords ``sparse_model``, ``max_active_dims``)."""
    func = click.option("--max-active-dims", type=click.IntRange(min=1), default=None,
                        help="With --sparse-model: keep each vector's largest N weights [default: the model's].",
                        )(func)  # fmt: skip
    return click.option("--sparse-model", default=None, metavar="MODEL",
                        help="A sparse (SPLADE) model folder or hub id: sparse vectors (token ids and weights).",
                        )(func)  # fmt: skip


def hybrid_options(func: F) -> F:
    """`sentemb search`'s sparse flags besides :func:`sparse_options`: saved sparse vectors and the fusion."""
    options = [
        click.option("--sparse-embeddings", default=None, metavar="FILE",
                     help="With --sparse-model: saved sparse corpus vectors (`sentemb encode --sparse-model`: "
                          ".jsonl, .parquet, or a `sentemb batch` folder)."),
        click.option("--hybrid", is_flag=True,
                     help="With --sparse-model: fuse its hits with the dense model's (--model) hits."),
        click.option("--fusion", type=click.Choice(["rrf", "weighted"]), default="rrf", show_default=True,
                     help="--hybrid: reciprocal rank fusion, or a weighted sum of min-max normalised scores."),
        click.option("--sparse-weight", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
                     help="--hybrid: the sparse side's weight (the dense side gets 1 minus it)."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def check_sparse_search(
    sparse_model: str | None, *, index_path: str | None, embeddings: str | None, score: str | None,
    sparse_embeddings: str | None, hybrid: bool, params: dict[str, Any],
) -> None:  # fmt: skip
    """`sentemb search`: refuse sparse and hybrid flags that do not fit together, before any model loads."""
    if sparse_model is None:
        if hybrid or sparse_embeddings is not None:
            raise UsageError("--hybrid and --sparse-embeddings need a sparse model: give --sparse-model MODEL")
        return
    if index_path is not None:
        raise UsageError("--index holds dense vectors; search sparse vectors with --corpus or --sparse-embeddings")
    if not hybrid and (embeddings is not None or score is not None or params.get("model") or params.get("model_arg")):
        raise UsageError("--model, --embeddings and --score are the dense model's: add --hybrid to fuse both, or "
                         "drop them to search with the sparse model alone")  # fmt: skip


def _given(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None and v != () and k not in ("model", "model_arg")}


def load_sparse_model(
    name: str, params: dict[str, Any], max_active_dims: int | None = None, *, beside_dense: bool = False
) -> SparseEncoder:
    """The sparse model ``name`` with the runtime flags of ``params`` (the encoder flags' keywords). A dense-only
    flag is refused, unless the sparse model runs ``beside_dense`` (a hybrid search), whose flag it is."""
    from sentemb.sparse import load_sparse

    fields = {flag.param: flag.field for flag in flags_of(EncoderConfig)}
    given = _given(params)
    dense = [f"--{fields[k].replace('_', '-')}" for k in given if fields.get(k) in DENSE_ONLY]
    if beside_dense:
        given = {k: v for k, v in given.items() if fields.get(k) not in DENSE_ONLY}
    elif dense:
        raise UsageError(f"{', '.join(dense)}: a dense model's option; a sparse model pools over its vocabulary "
                         "and cuts texts at its max length")  # fmt: skip
    config = config_from_options(**{**given, "model": name})
    options = {fields[k]: getattr(config, fields[k]) for k in given}
    if max_active_dims is not None:
        options["max_active_dims"] = max_active_dims
    return load_sparse(name, **options)


def check_sparse_output(
    sparse_model: str | None, max_active_dims: int | None, *, fmt: str, output_type: str, params: dict[str, Any]
) -> None:
    """`sentemb encode`: refuse what a sparse output cannot hold, before any model is loaded."""
    if sparse_model is None:
        if max_active_dims is not None:
            raise UsageError("--max-active-dims applies to a sparse model: give --sparse-model")
        return
    if params.get("model") or params.get("model_arg"):
        raise UsageError("give --model (dense vectors) or --sparse-model (sparse vectors), not both")
    if fmt == "npy":
        raise UsageError("a .npy holds dense rows; write sparse vectors to .jsonl or .parquet")
    if output_type != "float32":
        raise UsageError("--output-type quantises dense vectors; sparse vectors are stored as ids and float32 weights")


def sparse_facts(model: SparseEncoder) -> dict[str, Any]:
    """What decides a sparse model's vectors (as a file records them): its description, ``dim`` and name."""
    described = model.describe()
    facts = dict(described) if isinstance(described, dict) else {}
    facts.update(kind="sparse", model=model.config.model, dim=int(model.dim), max_length=int(model.max_length))
    return {k: v for k, v in facts.items() if _plain(v)}


def _plain(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def sparse_metadata(model: SparseEncoder) -> dict[str, str]:
    from sentemb.retrieval.sparse_files import parquet_facts

    return parquet_facts(sparse_facts(model))


def open_sparse_writer(fmt: str, path: Path | None, metadata: dict[str, str] | None) -> Any:
    """A writer of sparse vectors: Parquet (``metadata`` in the schema) or JSON lines (stdout when ``path`` is None)."""
    import sys

    from sentemb.retrieval.sparse_files import SparseJsonlWriter, SparseParquetWriter

    if path is None:
        return SparseJsonlWriter(sys.stdout)
    if fmt == "parquet":
        return SparseParquetWriter(path, metadata)
    return SparseJsonlWriter(path.open("w", encoding="utf-8"), owned=True)


def check_sparse_facts(saved: dict[str, Any], model: SparseEncoder, path: str) -> None:
    """Refuse to search sparse vectors that another model (or other options) made."""
    if saved and saved.get("kind") not in (None, "sparse"):
        raise InputError(f"{path}: holds dense vectors; give it as --embeddings, or encode with --sparse-model")
    now = sparse_facts(model)
    diffs = [f"{key}: {saved.get(key)!r} there, {now.get(key)!r} now"
             for key in COMPARED if key in saved and key in now and saved[key] != now[key]]  # fmt: skip
    if diffs:
        raise InputError(
            f"{path}: its sparse vectors were made with another model or options ({'; '.join(diffs)}); "
            f"search with the model that made them ({saved.get('model')}), or encode the corpus again"
        )
