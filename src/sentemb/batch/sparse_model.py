"""A batch job with a sparse (SPLADE) model: the header the driver writes, the actors' model and its check,
and the shard layout (``id``, ``indices`` as ``list<int32>``, ``values`` as ``list<float32>``, carried columns).

The rules are the dense job's: the driver describes the model from its folder without building it (the
weights' sha256, the vocabulary size from the transformer's config, max length, the backend resolved for
the actors' device), each actor checks that what it loaded matches, and a rerun with another model or
options into the same folder is refused. The pooling, its activation and ``max_active_dims`` are in the
header's ``pooling`` ("splade max relu top 64"), a compared field, so shards of different settings never mix.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sentemb.batch.io import ShardRows
from sentemb.batch.model import worker_config
from sentemb.config import EncoderConfig, Precision
from sentemb.errors import ConfigError, IntegrityError
from sentemb.machine import Machine
from sentemb.models.resolve import sha256_file
from sentemb.plan import open_model
from sentemb.prompts import resolve_prompt

if TYPE_CHECKING:
    import pyarrow as pa

    from sentemb.batch.spec import BatchJob
    from sentemb.sparse import SparseEncoder
    from sentemb.sparse_vectors import SparseEmbeddings

INDICES, VALUES = "indices", "values"
CHECKED = ("sha256", "dim", "max_length", "backend", "precision")


def sparse_columns(job: BatchJob) -> dict[str, object]:
    """The header's column facts of a sparse job (no embedding column: two list columns)."""
    return {"kind": "sparse", "id_column": job.id_column, "text_column": job.text_column, "embedding_column": None,
            "indices_column": INDICES, "values_column": VALUES, "carry_columns": list(job.carry_columns)}  # fmt: skip


def describe_sparse_job_model(
    config: EncoderConfig, num_gpus: float, *, max_active_dims: int | None, prompt_name: str | None = None,
    prompt: str | None = None,
) -> dict[str, object]:  # fmt: skip
    """What the sparse vectors will be, from the folder alone (no backend is built), in the keys of the
    dense job's :func:`~sentemb.batch.model.describe_job_model`."""
    from sentemb.sparse import EMBEDDING_OPTIONS

    defaults = EncoderConfig()
    dense = [name for name in EMBEDDING_OPTIONS if getattr(config, name) != getattr(defaults, name)]
    if dense:  # refused here, on the driver, before any actor starts
        raise ConfigError(f"{', '.join(dense)}: an embedding model's option; a sparse model has none")
    machine = Machine.here()
    _, spec = open_model(config, machine, task="sparse")
    worker = worker_config(config, num_gpus, machine, spec)
    if worker.precision is Precision.FP16 and not worker.device.startswith("cuda"):
        raise ConfigError("precision fp16 is for CUDA: give each actor a GPU (--num-gpus 1), or use bf16 or fp32")
    splade = spec.sparse.splade if spec.sparse is not None else None
    keep = max_active_dims or spec.max_active_dims
    pooling = f"splade {splade.pooling} {splade.activation}" if splade is not None else "splade"
    default = spec.st.default_prompt_name if config.default_prompt_name is None else config.default_prompt_name
    return {
        "model": config.model,
        "sha256": {p.name: sha256_file(p) for p in spec.weights},
        "dim": _vocabulary_size(spec.transformer_dir),
        "truncate_dim": None,
        "prompt_text": resolve_prompt(spec.st.prompt_dict, default, prompt=prompt, prompt_name=prompt_name),
        "pooling": pooling + (f" top {keep}" if keep else ""),
        "normalize": False,
        "max_length": config.max_length or spec.max_length,
        "long_text": worker.long_text.value,
        "chunk_overlap": None,
        "backend": worker.backend.value,
        "precision": worker.precision.value,
    }


def _vocabulary_size(folder: Any) -> int | None:
    """The MLM head's vocabulary (the sparse vectors' dim), from the transformer's config.json."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    size = json.loads(path.read_text(encoding="utf-8")).get("vocab_size")
    return int(size) if isinstance(size, int) else None


def load_sparse_worker(config: EncoderConfig, worker: EncoderConfig, job: BatchJob, header: dict) -> SparseEncoder:
    """The actor's sparse model, checked against the header: the same weights, vocabulary, length and runtime."""
    from sentemb.sparse import load_sparse

    model = load_sparse(worker.model, config=worker, max_active_dims=job.max_active_dims)
    described = model.describe()
    got = {"sha256": described.get("sha256"), "dim": model.dim, "max_length": model.max_length,
           "backend": model.backend, "precision": model.plan.precision}  # fmt: skip
    for key in CHECKED:
        if header.get(key) is not None and got[key] != header[key]:
            raise IntegrityError(
                f"this worker loaded {config.model!r} with {key}={got[key]!r} but the job's header has "
                f"{header[key]!r}; install the same model files and packages on every node, or pass "
                f"--backend and --precision explicitly"
            )
    return model


def sparse_table(rows: ShardRows, vectors: SparseEmbeddings, id_column: str) -> pa.Table:
    """id, indices, values, then the carried columns."""
    import pyarrow as pa

    from sentemb.retrieval.sparse_files import sparse_arrays

    indices, values = sparse_arrays(vectors)
    columns = {id_column: rows.ids, INDICES: indices, VALUES: values}
    for name in rows.carry.column_names:
        columns[name] = rows.carry.column(name).combine_chunks() if len(rows.carry) else pa.array([], pa.null())
    return pa.table(columns)
