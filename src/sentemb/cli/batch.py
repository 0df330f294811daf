"""``sentemb batch``: embed a corpus on Ray Data into Parquet shards, resumable (``pip install 'sentemb[batch]'``)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

import click

from sentemb.cli.options import (
    EXIT_CODES_HELP,
    EXIT_INPUT,
    CliError,
    config_from_options,
    encoder_options,
    handle_errors,
    split_encoder_params,
)

EXAMPLES = """\b
Examples:
  sentemb batch passages/ vectors/ --column text --id-column id
  sentemb batch 's3://bucket/corpus/*.parquet' s3://bucket/vectors --carry title --ray-address auto
  ray job submit --address http://head:8265 -- sentemb batch s3://b/corpus.jsonl s3://b/out --num-gpus 1

\b
INPUT is a Parquet or JSONL file, folder or glob (local, s3://, gs://, hdfs:// or any fsspec URL).
OUTPUT_DIR gets one Parquet file per input shard (id, embedding as fixed_size_list<float32>[dim],
--carry columns), _manifest.json (model sha256, options, rows per shard) and _errors.jsonl (bad
rows with their ids; with --long-text error, texts over --max-length are bad rows too). Rerunning
the same command finishes a killed job; different model or options into the same folder are
refused. Without --ray-address or RAY_ADDRESS a local Ray instance runs.

"""


@click.command(epilog=EXAMPLES + EXIT_CODES_HELP)
@click.argument("input_path", metavar="INPUT")
@click.argument("output_dir", metavar="OUTPUT_DIR")
@click.option("--column", "text_column", default="text", show_default=True, help="Column or field with the text.")
@click.option("--id-column", default="id", show_default=True, help="Column or field with each row's id.")
@click.option("--carry", multiple=True, metavar="COLUMN", help="Input column to copy to the output (repeatable).")
@click.option("--embedding-column", default="embedding", show_default=True, help="Name of the vector column.")
@click.option("--input-format", type=click.Choice(["auto", "parquet", "jsonl"]), default="auto", show_default=True,
              help="Input format; auto goes by each file's extension.")
@click.option("--shard-rows", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Parquet: rows per output shard (cut at row groups).")
@click.option("--shard-bytes", type=click.IntRange(min=1), default=4 << 20, show_default=True,
              help="JSONL: input bytes per output shard.")
@click.option("--strict", is_flag=True, help="Stop at the first bad row (null or non-string text, no id).")
@click.option("--num-actors", type=click.IntRange(min=1), default=None,
              help="Model replicas [default: as many as the cluster's CPUs (or GPUs) allow].")
@click.option("--num-cpus", "num_cpus", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="CPUs per actor.")
@click.option("--num-gpus", "num_gpus", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="GPUs per actor (e.g. 1, or 0.5 to share a GPU).")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster to attach to (also RAY_ADDRESS) [default: start a local instance].")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: when stderr is a terminal].")
@click.option("--quiet", "-q", is_flag=True, help="No summary line on stderr.")
@encoder_options
@handle_errors
def batch(input_path: str, output_dir: str, **params: Any) -> None:
    """Embed a corpus too big for one machine on Ray Data; rerun the same command to resume."""
    from sentemb.batch import BatchJob, run_batch
    from sentemb.batch.job import describe_result

    encoder_params, rest = split_encoder_params(params)
    config = config_from_options(**encoder_params)
    job = BatchJob(
        input=input_path,
        output_dir=output_dir,
        text_column=rest["text_column"],
        id_column=rest["id_column"],
        carry_columns=tuple(rest["carry"]),
        embedding_column=rest["embedding_column"],
        input_format=rest["input_format"],
        shard_rows=rest["shard_rows"],
        shard_bytes=rest["shard_bytes"],
        strict=rest["strict"],
        num_actors=rest["num_actors"],
        num_cpus_per_actor=rest["num_cpus"],
        num_gpus_per_actor=rest["num_gpus"],
        ray_address=rest["ray_address"],
        progress=rest["progress"],
    )
    try:
        with _progress_lines(not rest["quiet"] and rest["progress"] is None and not sys.stderr.isatty()):
            result = run_batch(job, config)
    except ImportError as exc:  # Ray Data missing: say which extra brings it
        raise CliError(str(exc), EXIT_INPUT) from None
    if not rest["quiet"]:
        click.echo(describe_result(result), err=True)


@contextlib.contextmanager
def _progress_lines(show: bool) -> Iterator[None]:
    """Without a terminal (cluster job logs), show the job's periodic progress lines on stderr."""
    if not show:
        yield
        return
    logger = logging.getLogger("sentemb")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
