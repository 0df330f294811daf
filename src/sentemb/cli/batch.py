"""``sentemb batch``: embed a corpus on Ray Data into Parquet shards, resumable (``pip install 'sentemb[batch]'``)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import click

from sentemb.batch.spec import BatchJob
from sentemb.cli.common import (
    EXIT_CODES_HELP,
    config_from_options,
    encoder_options,
    handle_errors,
    split_encoder_params,
)
from sentemb.cli.flags import add_flags, build

EXAMPLES = """\b
Examples:
  sentemb batch passages/ vectors/ --column text --id-column id
  sentemb batch 's3://bucket/corpus/*.parquet' s3://bucket/vectors --carry title --ray-address auto
  ray job submit --address http://head:8265 -- sentemb batch s3://b/corpus.jsonl s3://b/out --num-gpus 1
  sentemb batch corpus.jsonl codes/ --output-type int8 --calibration domain-sample.txt

\b
INPUT is a Parquet or JSONL file, folder or glob (local, s3://, gs://, hdfs:// or any fsspec URL).
OUTPUT_DIR gets one Parquet file per input shard (id, embedding as fixed_size_list<float32>[dim],
--carry columns), _manifest.json (model sha256, options, rows per shard) and _errors.jsonl (bad
rows with their ids and why; with --long-text error, texts over --max-length are bad rows too).
Rerunning the same command finishes a killed job; different model or options into the same folder
are refused. --output-type int8/uint8 stores per-dimension codes whose ranges every actor measures on
the same calibration texts (read here, on the driver); each shard's metadata records them.
Without --ray-address or RAY_ADDRESS a private local Ray instance runs (it never joins
a Ray that is already running here); Ray's own messages go to a log file, named if the job fails.

"""


@click.command(epilog=EXAMPLES + EXIT_CODES_HELP)
@add_flags(BatchJob)
@click.option("--quiet", "-q", is_flag=True, help="No summary line on stderr.")
@encoder_options
@handle_errors
def batch(quiet: bool, **params: Any) -> None:
    """Embed a corpus too big for one machine on Ray Data; rerun the same command to resume."""
    from sentemb.batch import run_batch

    encoder_params, job_params = split_encoder_params(params)
    job = build(BatchJob, job_params)
    config = config_from_options(**encoder_params)
    show_lines = not quiet and job.progress is None and not sys.stderr.isatty()
    with _ray_output_to_log() as (log_path, terminal), _progress_lines(show_lines, terminal):
        try:
            result = run_batch(job, config, progress_file=terminal)
        except BaseException:
            if os.path.getsize(log_path):
                click.echo(f"sentemb batch: Ray's messages are in {log_path}", file=terminal)
            raise
        os.unlink(log_path)
    if not quiet:
        click.echo(result.summary(), err=True)


@contextlib.contextmanager
def _ray_output_to_log() -> Iterator[tuple[str, IO[str]]]:
    """Send what is written to file descriptor 2 meanwhile (Ray's loggers, the WARNING about token
    authentication, its C++ core worker's ``core_worker.cc`` lines) to a log file, not the terminal.

    Yields the log file's path (the caller deletes it after a success) and a stream to the terminal
    for sentemb's own progress: a copy of descriptor 2 as it was, or ``sys.stderr`` when that is not
    descriptor 2 (a captured stream: tests, notebooks).
    """
    handle, path = tempfile.mkstemp(prefix="sentemb-batch-", suffix=".log")
    stream = sys.stderr
    try:
        real = stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        real = False
    stream.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, errors="backslashreplace") if real else stream
    os.dup2(handle, 2)
    os.close(handle)
    try:
        yield path, terminal
    finally:
        terminal.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if terminal is not stream:
            terminal.close()


@contextlib.contextmanager
def _progress_lines(show: bool, stream: IO[str]) -> Iterator[None]:
    """Without a terminal (cluster job logs), show the job's periodic progress lines on ``stream``."""
    if not show:
        yield
        return
    logger = logging.getLogger("sentemb")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
