"""What ``sentemb index``, ``dedup`` and ``cluster`` share: vectors from a vector file or from texts, progress, tables.

An input is a vector file when it is a ``.npy`` file, a Parquet file with an ``embedding`` column
(as ``sentemb encode`` writes it) or a ``sentemb batch`` output folder; anything else is read as
texts (the formats of ``sentemb encode``) and embedded with the encoder options.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentemb.cli.common import EXIT_MODEL, CliError, InputError, OutputError, load_encoder
from sentemb.cli.io import make_source, read_blocks
from sentemb.cli.output import atomic_path, check_figure, check_installed, check_output

CHUNK_ROWS = 2048
TABLE_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


@dataclass
class Corpus:
    """Ids, float vectors, texts (None when the input held vectors) and the model facts, if known."""

    ids: list[Any]
    vectors: np.ndarray
    texts: list[str] | None = None
    model: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def retrieval_errors() -> Iterator[None]:
    """Damaged index files and unusable vectors are input problems (exit 1); another model's vectors exit 3."""
    from sentemb.errors import IndexFileError, ModelMismatchError, VectorsError

    try:
        yield
    except (IndexFileError, VectorsError) as exc:
        raise InputError(str(exc)) from None
    except ModelMismatchError as exc:
        raise CliError(str(exc), EXIT_MODEL) from None


def is_vector_file(path: str) -> bool:
    where = Path(path)
    if where.is_dir():
        return True
    if where.suffix.lower() == ".npy":
        return True
    if where.suffix.lower() in (".parquet", ".pq") and where.is_file():
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return "embedding" in pq.ParquetFile(where).schema_arrow.names
        except (pa.ArrowInvalid, OSError):  # unreadable: the text reader reports it in one line
            return False
    return False


def read_vector_corpus(path: str) -> Corpus:
    """Float vectors from a vector file (quantised files are dequantised: index them from floats)."""
    from sentemb.errors import VectorsError
    from sentemb.retrieval.vectors import read_vectors

    try:
        found = read_vectors(path)
    except VectorsError as exc:
        raise InputError(str(exc)) from None
    if found.output != "float32":
        raise InputError(f"{path}: holds {found.output} vectors; index, dedup and cluster need float32 vectors "
                         "(write them with --output-type float32, the default, or keep a float copy)")
    if len(found.vectors) == 0:
        raise InputError(f"{path}: no vectors in the input")
    return Corpus(found.ids, found.vectors, None, dict(found.model))


def read_text_corpus(path: str, *, field: str, id_field: str | None, errors: str, show: bool,
                     encoder_params: dict[str, Any]) -> Corpus:  # fmt: skip
    """Texts from ``path`` embedded chunk by chunk with a progress bar."""
    source = make_source(path, input_format=None, field=field, id_field=id_field, errors=errors)
    encoder = load_encoder(**encoder_params)
    ids: list[Any] = []
    texts: list[str] = []
    parts: list[np.ndarray] = []
    with progress_bar("encoding", source.size, show) as advance:
        for chunk in read_blocks(source, CHUNK_ROWS):
            parts.append(encoder.encode(chunk.texts, show_progress=False))
            ids += chunk.ids
            texts += chunk.texts
            advance(chunk.done)
    if not texts:
        raise InputError(f"{source.label}: no texts in the input")
    return Corpus(ids, np.concatenate(parts), texts, encoder.describe().to_dict())


def read_corpus(path: str, *, field: str, id_field: str | None, errors: str, show: bool,
                encoder_params: dict[str, Any]) -> Corpus:  # fmt: skip
    if path != "-" and not Path(path).exists():
        raise InputError(f"{path}: no such file or folder")
    if path != "-" and is_vector_file(path):
        return read_vector_corpus(path)
    return read_text_corpus(path, field=field, id_field=id_field, errors=errors, show=show,
                            encoder_params=encoder_params)  # fmt: skip


def show_progress(progress: bool | None, quiet: bool) -> bool:
    return (not quiet) and (sys.stderr.isatty() if progress is None else progress)


@contextlib.contextmanager
def progress_bar(label: str, total: int | None, show: bool) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(done)`` (absolute); a rich bar on stderr when ``show``."""
    if not show:
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(label), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True)) as bar:  # fmt: skip
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)


def counting(advance: Callable[[int], None]) -> Callable[[int], None]:
    """An ``advance`` that adds up relative steps (the library reports rows just done)."""
    done = [0]

    def step(rows: int) -> None:
        done[0] += rows
        advance(done[0])

    return step


def table_output_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise OutputError(f"{path}: cannot tell the output format from {suffix or 'no extension'!r}; "
                          "use .jsonl, .parquet or .csv")  # fmt: skip
    return TABLE_FORMATS[suffix]


def check_outputs(output: str, plot: str | None, force: bool) -> str:
    """Check every output of a command before it does any work: the table (``-o``) and the figure
    (``--plot``), and the optional dependencies that write them; returns the table's format."""
    fmt = table_output_format(output)
    check_output(output, force)
    if fmt == "parquet":
        check_installed("pyarrow", f"{output} (Parquet)")
    if plot is not None:
        check_figure(plot, force, "--plot")
    return fmt


def write_table(path: str, columns: dict[str, list[Any]], force: bool) -> None:
    """Rows (one list per column) as .jsonl, .parquet or .csv, written atomically."""
    fmt = table_output_format(path)
    with atomic_path(path, force) as temp:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({name: pa.array(values) for name, values in columns.items()}), temp)
        elif fmt == "csv":
            import csv

            with temp.open("w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(list(columns))
                writer.writerows(zip(*columns.values(), strict=True))
        else:
            with temp.open("w", encoding="utf-8") as handle:
                names = list(columns)
                for row in zip(*columns.values(), strict=True):
                    handle.write(json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False, default=str) + "\n")


def size_histogram(sizes: list[int], title: str, path: str, force: bool) -> None:
    """A bar chart of group/cluster sizes (how many groups of each size), saved atomically."""
    from matplotlib.figure import Figure  # a bare Figure draws with Agg: no pyplot, no global backend

    from sentemb.cli.output import save_figure

    figure = Figure(figsize=(7, 4))
    _draw_sizes(figure.subplots(), sizes, title)
    save_figure(figure, path, force)


def cluster_plot(
    sizes: list[int], labels: np.ndarray, vectors: np.ndarray, *, title: str, path: str, force: bool
) -> None:
    """The size histogram beside a 2-D PCA map of the rows (a sample of 20,000 at most), coloured by
    cluster: the 10 largest in colours, the others grey, rows in no cluster light grey; saved atomically."""
    from matplotlib.figure import Figure

    from sentemb.cli.output import save_figure
    from sentemb.retrieval.cluster import projection_2d

    figure = Figure(figsize=(13, 4.8))
    left, right = figure.subplots(1, 2, width_ratios=(1, 1.2))
    _draw_sizes(left, sizes, title)
    rows, points = projection_2d(vectors)
    shown = labels[rows]
    palette = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C",
               "#CCB974", "#64B5CD"]  # fmt: skip
    colours = np.where(shown < 0, "#E5E5E5", "#A0A0A0").astype(object)
    for label, colour in enumerate(palette):
        colours[shown == label] = colour
    order = np.argsort(shown >= 0, kind="stable")  # unclustered rows underneath
    right.scatter(points[order, 0], points[order, 1], c=colours[order].tolist(), s=4, linewidths=0)
    right.set_title(f"PCA of {len(rows):,} of {len(labels):,} rows: 10 largest clusters coloured")
    right.set_xlabel("principal component 1")
    right.set_ylabel("principal component 2")
    save_figure(figure, path, force)


def _draw_sizes(axes: Any, sizes: list[int], title: str) -> None:
    values, counts = np.unique(np.asarray(sizes, dtype=np.int64), return_counts=True)
    axes.bar([str(v) for v in values.tolist()], counts.tolist(), color="#4C72B0")
    axes.set_xlabel("size (rows)")
    axes.set_ylabel("how many")
    axes.set_title(title)
    if len(values) > 30:
        axes.set_xticks(axes.get_xticks()[:: max(1, len(values) // 15)])
