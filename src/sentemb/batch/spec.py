"""What a batch job is asked to do (:class:`BatchJob`, which ``sentemb batch`` turns into flags) and
what it did (:class:`BatchResult`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sentemb.errors import ConfigError
from sentemb.options import option

INPUT_FORMATS = ("auto", "parquet", "jsonl")


@dataclass(frozen=True, kw_only=True)
class BatchJob:
    """What to embed and where; the model and its options are an :class:`~sentemb.config.EncoderConfig`."""

    input: str = option(
        help="Parquet or JSONL file, folder or glob: a local path or a URL (s3://, gs://, hdfs://, fsspec).",
        metavar="INPUT",
    )
    output_dir: str = option(help="Folder (local or URL) that gets the Parquet shards.", metavar="OUTPUT_DIR")
    text_column: str = option("text", help="Column or field with the text.", flag="--column")
    id_column: str = option("id", help="Column or field with each row's id.")
    carry_columns: tuple[str, ...] = option(
        (), help="Input column to copy to the output (repeatable).", flag="--carry", metavar="COLUMN"
    )
    embedding_column: str = option("embedding", help="Name of the vector column.")
    output_type: str = option(
        "float32", choices=("float32", "int8", "uint8", "binary", "ubinary"),
        help="Stored vector type (output quantisation, not the compute --precision); int8/uint8 ranges come "
             "from the calibration sentences, measured by each actor's encoder (same model: same ranges).",
    )  # fmt: skip
    calibration: str | None = option(
        None, metavar="FILE",
        help="int8/uint8: texts (one a line, read on the driver) to measure the ranges on [default: the bundled "
             "sentences].",
    )  # fmt: skip
    input_format: str = option(
        "auto", help="Input format; auto goes by each file's extension.", choices=INPUT_FORMATS
    )
    shard_rows: int = option(10_000, help="Parquet: rows per output shard (cut at row groups).", min=1)
    shard_bytes: int = option(4 << 20, help="JSONL: input bytes per output shard.", min=1)
    strict: bool = option(False, help="Stop at the first bad row (null or non-string text, no id).")
    num_actors: int | None = option(
        None, help="Model replicas [default: as many as the cluster's CPUs (or GPUs) allow].", min=1
    )
    num_cpus_per_actor: float = option(1.0, help="CPUs per actor.", flag="--num-cpus", min=0)
    num_gpus_per_actor: float = option(
        0.0, help="GPUs per actor (e.g. 1, or 0.5 to share a GPU).", flag="--num-gpus", min=0
    )
    ray_address: str | None = option(
        None, help="Ray cluster to attach to ('auto': the one running here) [default: a private local Ray].",
        env="RAY_ADDRESS", metavar="ADDRESS",
    )  # fmt: skip
    progress: bool | None = option(None, help="Progress bar [default: when stderr is a terminal].")
    prompt_name: str | None = option(None, help="The model's prompt before each text [default: its default].")
    prompt: str | None = option(None, help="A prompt text before each text (instead of --prompt-name).")
    sparse_model: str | None = option(
        None, help="Embed with this sparse (SPLADE) model instead of --model: shards hold token ids and weights "
        "('indices' and 'values' list columns).", flag="--sparse-model", metavar="MODEL",
    )  # fmt: skip
    max_active_dims: int | None = option(
        None, help="With --sparse-model: keep each vector's largest N weights [default: the model's].", min=1
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "carry_columns", tuple(self.carry_columns))
        carry = self.carry_columns  # may include the text column, to keep the text beside its vector
        if self.id_column == self.text_column or self.id_column in carry or len(set(carry)) != len(carry):
            raise ConfigError(
                f"id column {self.id_column!r}, text column {self.text_column!r} and carried columns "
                f"{list(carry)} must not repeat (the id is always in the output)"
            )
        if self.embedding_column in (self.id_column, *carry):
            raise ConfigError(f"embedding column {self.embedding_column!r} clashes with an input column")
        if self.calibration is not None and self.output_type not in ("int8", "uint8"):
            raise ConfigError("calibration only applies to output_type int8 or uint8 (--output-type int8)")
        if self.input_format not in INPUT_FORMATS:
            raise ConfigError(f"input_format={self.input_format!r} is not valid; choose one of {INPUT_FORMATS}")
        if self.num_actors is not None and self.num_actors < 1:
            raise ConfigError(f"num_actors must be at least 1, got {self.num_actors}")
        self._check_sparse()
        if self.num_cpus_per_actor < 0 or self.num_gpus_per_actor < 0:
            raise ConfigError("num_cpus_per_actor and num_gpus_per_actor must be >= 0")


    def _check_sparse(self) -> None:
        if self.sparse_model is None:
            if self.max_active_dims is not None:
                raise ConfigError("max_active_dims applies to a sparse model: give sparse_model (--sparse-model)")
            return
        if self.output_type != "float32":
            raise ConfigError("output_type quantises dense vectors; a sparse model's shards hold ids and float32 "
                              "weights (leave --output-type out)")  # fmt: skip
        if {"indices", "values"} & {self.id_column, *self.carry_columns}:
            raise ConfigError("a sparse job writes 'indices' and 'values' columns; the id and carried columns must "
                              "have other names")  # fmt: skip


@dataclass(frozen=True)
class BatchResult:
    """What a run did. The row counts are the output folder's, across every run that wrote to it."""

    output_dir: str
    shards_planned: int
    shards_skipped: int  # already committed by an earlier run
    shards_written: int  # by this run
    rows_read: int  # input rows of the committed shards: written + errored
    rows_written: int  # vectors in the output folder
    rows_errored: int  # bad rows, listed in _errors.jsonl
    rows_embedded: int  # vectors this run wrote (the rest came from earlier runs)
    seconds: float
    header: dict = field(repr=False)

    @property
    def rows_per_second(self) -> float:
        """Vectors per second of this run."""
        return self.rows_embedded / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One JSON line for humans and scripts."""
        facts = {
            "output_dir": self.output_dir,
            "shards": self.shards_planned,
            "skipped": self.shards_skipped,
            "written": self.shards_written,
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "rows_errored": self.rows_errored,
            "seconds": round(self.seconds, 2),
            "rows_per_second": round(self.rows_per_second, 1),
        }
        return json.dumps(facts)
