"""``sentemb encode``: texts from a file, stdin or --text into .npy, .jsonl or .parquet, streamed."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from sentemb.cli.common import (
    EXIT_CODES_HELP,
    CliError,
    InputError,
    OutputError,
    UsageError,
    encoder_options,
    load_encoder,
)
from sentemb.cli.io import ERROR_POLICIES, Block, Source, inline_block, make_source, read_blocks
from sentemb.cli.output import (
    Writer,
    atomic_path,
    check_installed,
    check_output,
    open_quantized_writer,
    open_writer,
    output_format,
)
from sentemb.cli.sparse import (
    check_sparse_output,
    load_sparse_model,
    open_sparse_writer,
    sparse_metadata,
    sparse_options,
)

if TYPE_CHECKING:
    from sentemb.encoder import Encoder

# Texts per encoder call: bounds memory and keeps length sorting effective.
CHUNK_ROWS = 2048
EXIT_TERMINATED = 143  # 128 + SIGTERM, as shells report it
SKIPPED_SHOWN = 10  # ids of skipped records named in the summary

EXAMPLES = """\b
Examples:
  sentemb encode sentences.txt -o vectors.npy
  sentemb encode docs.jsonl --field body --id-field doc_id -o docs.parquet
  sentemb encode reviews.csv --column review -o reviews.jsonl --max-length 128
  cat notes.txt | sentemb encode - -o - > notes.jsonl
  sentemb encode --text "first text" --text "second text" -o two.npy
  sentemb encode docs.jsonl --sparse-model ./splade -o docs.sparse.parquet   # token ids and weights

\b
Input format comes from the extension (.txt, .jsonl, .csv, .tsv, .parquet; stdin is .txt, one
text per line). Outputs: .npy (float32, row i = input i), .jsonl ({"id", "embedding"}) or .parquet
(id + fixed_size_list<float32> embedding; the footer records the model and options, which
`sentemb search --embeddings` checks). Ids are --id-field's value or the record's position
counting from 0. --errors skip keeps those ids, so it needs .jsonl or .parquet output (a .npy
row has no id: skipping would shift every later row).

--output-type stores the vectors quantised (sentemb.quantize, the packing of sentence-transformers'
quantize_embeddings); it is not --precision, the compute precision. binary/ubinary pack 8 dimensions
per byte. int8/uint8 scale each dimension by ranges measured on the bundled calibration sentences
encoded by the same model (or on --calibration FILE, one text per line); they need .parquet or .jsonl
output: a .parquet records the output type, dim, ranges and their source in its metadata, a .jsonl
in a first line {"sentemb.quantize": {...}} before the {"id", "embedding"} rows (.npy cannot).

"""


@click.command(epilog=EXAMPLES + EXIT_CODES_HELP)
@click.argument("input_path", metavar="[INPUT]", required=False)
@click.option("-o", "--output", required=True, metavar="PATH",
              help="Output .npy, .jsonl or .parquet; - for stdout (JSON lines).")
@click.option("--text", "-t", "texts", multiple=True, help="A text to embed (repeatable) instead of INPUT.")
@click.option("--field", default=None, help="JSON lines field with the text [default: text].")
@click.option("--column", default=None, help="csv/tsv/parquet column with the text [default: text].")
@click.option("--id-field", default=None, help="Field or column to carry along as the id.")
@click.option("--input-format", type=click.Choice(["txt", "jsonl", "csv", "tsv", "parquet"]), default=None,
              help="Override the input format the extension implies.")
@click.option("--output-format", type=click.Choice(["npy", "jsonl", "parquet"]), default=None,
              help="Override the output format the extension implies.")
@click.option("--output-type", type=click.Choice(["float32", "int8", "uint8", "binary", "ubinary"]),
              default="float32", show_default=True,
              help="Stored vector type (output quantisation, not the compute --precision).")
@click.option("--calibration", default=None, metavar="FILE",
              help="int8/uint8: texts (one a line) to measure the ranges on [default: the bundled sentences].")
@click.option("--errors", type=click.Choice(ERROR_POLICIES), default="strict", show_default=True,
              help="Invalid UTF-8 or a row without text: stop, replace bad bytes, or skip the row.")
@click.option("--force", "-f", is_flag=True, help="Overwrite an existing output.")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: when stderr is a terminal].")
@click.option("--quiet", "-q", is_flag=True, help="No progress, summary or notes on stderr.")
@click.option("--prompt-name", default=None, help="The model's prompt to put before each text [default: its default].")
@click.option("--prompt", default=None, help="A prompt text to put before each text (instead of --prompt-name).")
@sparse_options
@encoder_options
def encode(
    *,
    input_path: str | None,
    output: str,
    texts: tuple[str, ...],
    field: str | None,
    column: str | None,
    id_field: str | None,
    input_format: str | None,
    output_format: str | None,
    output_type: str,
    calibration: str | None,
    errors: str,
    force: bool,
    progress: bool | None,
    quiet: bool,
    prompt_name: str | None,
    prompt: str | None,
    sparse_model: str | None,
    max_active_dims: int | None,
    **encoder_params: Any,
) -> None:
    """Embed texts into a vector file, streaming: INPUT may be larger than memory."""
    fmt = output_format_checked(output, output_format, force)
    _check_output_options(fmt, errors=errors, output_type=output_type, calibration=calibration)
    check_sparse_output(sparse_model, max_active_dims, fmt=fmt, output_type=output_type, params=encoder_params)
    source = choose_source(input_path, texts, input_format=input_format, field=text_field(field, column),
                           id_field=id_field, errors=errors)
    with _sigterm_as_exit():
        encoder: Any = load_encoder(**encoder_params) if sparse_model is None else load_sparse_model(
            sparse_model, encoder_params, max_active_dims)  # fmt: skip
        prompt = encoder.resolve_prompt(prompt_name=prompt_name, prompt=prompt)  # an unknown name fails now
        chunks = inline_block(list(texts), errors) if source is None else read_blocks(source, CHUNK_ROWS)
        show = (not quiet) and (sys.stderr.isatty() if progress is None else progress)
        total = None if source is None else source.size
        started = time.perf_counter()
        metadata = _parquet_metadata(encoder, sparse_model is not None) if fmt == "parquet" else None
        with _output(output, force) as path:
            writer = open_sparse_writer(fmt, path, metadata) if sparse_model is not None else _writer(
                fmt, path=path, encoder=encoder, metadata=metadata, output_type=output_type, calibration=calibration,
                prompt=prompt)  # fmt: skip
            try:
                stats = _encode_all(_chunk_encoder(encoder, prompt, sparse_model is not None), chunks, writer, total,
                                    show, output=output)  # fmt: skip
                if stats.rows == 0:
                    raise InputError(f"{'--text' if source is None else source.label}: no texts in the input")
            except BaseException:
                writer.discard()
                raise
            try:
                writer.close()
            except OSError as exc:
                writer.discard()
                raise OutputError(f"{output}: cannot write ({exc.strerror or exc})") from None
    if not quiet:
        _summary(stats, encoder, output, time.perf_counter() - started)


def _parquet_metadata(encoder: Any, sparse: bool) -> dict[str, str]:
    """The model facts a Parquet footer records (`sentemb search` checks them)."""
    if sparse:
        return sparse_metadata(encoder)
    from sentemb.cli.vectors import parquet_metadata

    return parquet_metadata(encoder)


def _check_output_options(fmt: str, *, errors: str, output_type: str, calibration: str | None) -> None:
    """Refuse option combinations the output format cannot keep, before any work is done."""
    if errors == "skip" and fmt == "npy":
        raise UsageError(
            "--errors skip with a .npy output would shift every row after a skipped record (a .npy row has no "
            "id); write .jsonl or .parquet, which keep each record's id, or use --errors replace"
        )
    if output_type in ("int8", "uint8") and fmt == "npy":
        raise UsageError(f"--output-type {output_type} needs its ranges to be read back, which a .npy cannot hold; "
                         "write .parquet or .jsonl (they record the ranges) or use --output-type binary")
    if calibration is not None and output_type not in ("int8", "uint8"):
        raise UsageError("--calibration only applies to --output-type int8 or uint8")


def _writer(
    fmt: str, *, path: Path | None, encoder: Encoder, metadata: dict[str, str] | None, output_type: str,
    calibration: str | None, prompt: str,
) -> Writer:  # fmt: skip
    if output_type == "float32":
        return open_writer(fmt, path, encoder.dim, metadata)
    ranges: np.ndarray | None = None
    facts: dict[str, Any] = {}
    if output_type in ("int8", "uint8"):
        from sentemb.retrieval.calibrate import calibration_ranges

        ranges, facts = calibration_ranges(encoder, calibration, prompt)
    return open_quantized_writer(fmt, path, encoder.dim, output=output_type, ranges=ranges, facts=facts,
                                 metadata=metadata)


def _summary(stats: _Stats, encoder: Encoder, output: str, seconds: float) -> None:
    if stats.skipped:
        shown = ", ".join(map(str, stats.skipped_ids[:SKIPPED_SHOWN]))
        more = ", ..." if stats.skipped > SKIPPED_SHOWN else ""
        click.echo(f"note: skipped {stats.skipped:,} records (--errors skip); the output has no row for ids "
                   f"{shown}{more}", err=True)
    if stats.truncated:
        hint = "a sparse model reads its first tokens" if encoder.plan.kind == "sparse" else (
            "--long-text chunk embeds all of them")  # fmt: skip
        click.echo(f"note: {stats.truncated:,} texts were longer than {encoder.max_length} tokens and were "
                   f"truncated ({hint})", err=True)
    if sys.stderr.isatty():
        click.echo(f"wrote {stats.rows:,} vectors of {encoder.dim} to {output} in {seconds:.1f} s "
                   f"({stats.rows / max(seconds, 1e-9):,.0f} rows/s)", err=True)


class _Terminated(BaseException):
    """Raised in the main thread by SIGTERM so that cleanup (the temporary output) runs as for Ctrl-C."""


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """While the block runs, SIGTERM unwinds it like Ctrl-C (exit 143); the previous handler is restored."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except _Terminated:
        raise CliError("terminated", EXIT_TERMINATED) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def text_field(field: str | None, column: str | None) -> str:
    if field and column and field != column:
        raise UsageError("--field and --column name the same thing; give one")
    return field or column or "text"


def output_format_checked(output: str, override: str | None, force: bool) -> str:
    fmt = output_format(output, override)
    if output == "-" and fmt != "jsonl":
        raise UsageError("only JSON lines can go to stdout; give -o a file name for .npy or .parquet")
    check_output(output, force)
    if fmt == "parquet":  # pyarrow writes it: found missing now, not after the model is loaded
        check_installed("pyarrow", f"{output} (Parquet)")
    return fmt


def choose_source(
    input_path: str | None, texts: tuple[str, ...], *, input_format: str | None, field: str,
    id_field: str | None, errors: str,
) -> Source | None:
    """The input to read, or None when the texts came with --text."""
    if texts and input_path is not None:
        raise UsageError("give INPUT or --text, not both")
    if texts:
        return None
    if input_path is None:
        if sys.stdin.isatty():
            raise UsageError("give INPUT (a file, or - for stdin) or --text")
        input_path = "-"
    return make_source(input_path, input_format=input_format, field=field, id_field=id_field, errors=errors,
                       format_option=True)


@contextlib.contextmanager
def _output(output: str, force: bool) -> Iterator[Path | None]:
    if output == "-":
        yield None
    else:
        with atomic_path(output, force) as path:
            yield path


class _Stats:
    def __init__(self) -> None:
        self.rows = 0
        self.skipped = 0
        self.skipped_ids: list[Any] = []  # the first SKIPPED_SHOWN
        self.truncated = 0


def _chunk_encoder(encoder: Any, prompt: str, sparse: bool) -> Callable[[list[str]], Any]:
    """One chunk's texts to (vectors, info): a dense encoder's ``EncodeResult`` or a sparse one's result."""
    if sparse:
        return lambda texts: encoder.encode_with_info(texts, prompt=prompt)
    return lambda texts: encoder.encode_with_info(texts, prompt=prompt, show_progress=False)


def _encode_all(
    encode_chunk: Callable[[list[str]], Any], chunks: Iterator[Block], writer: Any, total: int | None, show: bool,
    *, output: str,
) -> _Stats:
    stats = _Stats()
    with _progress_bar(total, show) as advance:
        for chunk in chunks:
            stats.skipped = chunk.skipped
            stats.skipped_ids += chunk.skipped_ids[: SKIPPED_SHOWN - len(stats.skipped_ids)]
            if chunk.texts:
                result = encode_chunk(chunk.texts)
                try:
                    writer.write(chunk.ids, result.embeddings)
                except OSError as exc:
                    raise OutputError(f"{output}: cannot write ({exc.strerror or exc})") from None
                stats.rows += len(chunk.texts)
                stats.truncated += sum(1 for item in result.info if item.truncated)
            advance(chunk.done, stats.rows)
    return stats


@contextlib.contextmanager
def _progress_bar(total: int | None, show: bool) -> Iterator[Any]:
    """Yields ``advance(done, rows)``; draws a rich bar with rows/s on stderr when ``show``."""
    if not show:
        yield lambda done, rows: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    started = time.perf_counter()
    columns = [TextColumn("encoding"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rows]:,} rows  {task.fields[rate]:,.0f} rows/s"), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("encode", total=total, rows=0, rate=0.0)

        def advance(done: int, rows: int) -> None:
            rate = rows / max(time.perf_counter() - started, 1e-9)
            bar.update(task, completed=done, rows=rows, rate=rate)

        yield advance
