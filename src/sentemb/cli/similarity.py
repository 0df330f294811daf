"""``sentemb similarity``: the cosine similarity of two texts, or the matrix of a few dozen."""

from __future__ import annotations

from typing import Any

import click
import numpy as np

from sentemb.cli.common import EXIT_CODES_HELP, InputError, UsageError, encoder_options, load_encoder
from sentemb.cli.fastpath import fastest_cached
from sentemb.cli.io import ERROR_POLICIES, records_from
from sentemb.cli.output import check_figure, print_rows, save_figure, table_format

HEATMAP_MAX = 60  # labels stop being readable beyond this
MATRIX_MAX = 5000  # n x n scores; beyond this, `sentemb search` is the tool

EXAMPLES = """\b
Examples:
  sentemb similarity "A man is eating food." "A man is eating a meal."
  sentemb similarity "a" "b" "c" --format jsonl
  sentemb similarity --file titles.txt --heatmap titles.png

\b
Two texts print one score. More texts (or --file) print every pair: a table on a terminal,
tab-separated values when piped. Without --backend, an exact fp32 ONNX/OpenVINO export already in
the cache (from `sentemb export` or an earlier --backend onnx run) is used: same scores, faster start.

"""


@click.command(epilog=EXAMPLES + EXIT_CODES_HELP)
@click.argument("texts", nargs=-1)
@click.option("--file", "-i", "file", default=None,
              help="Texts from a file (.txt, .jsonl, .csv, .tsv, .parquet; - for stdin).")
@click.option("--field", "--column", "field", default="text", show_default=True, help="Field or column with the text.")
@click.option("--errors", type=click.Choice(ERROR_POLICIES), default="strict", show_default=True,
              help="Invalid UTF-8 or a row without text: stop, replace bad bytes, or skip the row.")
@click.option("--format", "fmt", type=click.Choice(["table", "tsv", "jsonl"]), default=None,
              help="How to print pairs [default: table on a terminal, tsv when piped].")
@click.option("--heatmap", default=None, metavar="PNG", help=f"Draw the similarity matrix (up to {HEATMAP_MAX} texts).")
@click.option("--force", "-f", is_flag=True, help="Overwrite an existing heatmap file.")
@encoder_options
def similarity(
    *,
    texts: tuple[str, ...], file: str | None, field: str, errors: str, fmt: str | None, heatmap: str | None,
    force: bool, **encoder_params: Any,
) -> None:
    """Cosine similarity of two TEXTS, or of every pair of TEXTS or of a file's texts."""
    if file is not None and texts:
        raise UsageError("give TEXTS or --file, not both")
    ids, items = records_from(file, texts, field=field, errors=errors)  # ids: input positions, kept under skip
    if len(items) < 2:
        raise InputError("need at least two texts to compare (give two TEXTS or --file)")
    if len(items) > MATRIX_MAX:
        raise InputError(f"{len(items):,} texts make too many pairs; use `sentemb search` for large sets")
    if heatmap is not None:
        if len(items) > HEATMAP_MAX:
            raise InputError(f"a heatmap is readable for up to {HEATMAP_MAX} texts, got {len(items)}")
        check_figure(heatmap, force, "--heatmap")
    encoder = load_encoder(**fastest_cached(encoder_params))
    vectors = encoder.encode(items)
    scores = encoder.similarity(vectors, vectors)  # the model's similarity function (cosine unless it names another)
    title = f"{encoder.similarity_fn_name} similarity"
    if len(items) == 2 and fmt is None and heatmap is None:
        click.echo(f"{scores[0, 1]:.4f}")
    else:
        pairs = [(ids[i], ids[j], items[i], items[j], float(scores[i, j]))
                 for i in range(len(items)) for j in range(i + 1, len(items))]
        style = table_format(fmt, piped="tsv")
        if style == "table":
            pairs.sort(key=lambda pair: -pair[4])
        print_rows(["i", "j", "text_i", "text_j", "score"], pairs, style, title=title)
    if heatmap is not None:
        draw_heatmap(scores, items, heatmap, force, title=f"{title} ({encoder.config.model})")
        click.echo(f"wrote the heatmap to {heatmap}", err=True)


def draw_heatmap(scores: np.ndarray, labels: list[str], path: str, force: bool, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    short = [label if len(label) <= 40 else label[:39] + "…" for label in labels]
    size = max(4.0, 0.35 * len(labels) + 2.5)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    low = min(0.0, float(scores.min()))
    image = axes.imshow(scores, cmap="viridis", vmin=low, vmax=1.0)
    axes.set_title(title)
    axes.set_xticks(range(len(labels)), short, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(labels)), short, fontsize=8)
    if len(labels) <= 15:
        for i in range(len(labels)):
            for j in range(len(labels)):
                # viridis is light at the top of its range (the diagonal): dark text there, white below.
                light = (scores[i, j] - low) / max(1.0 - low, 1e-9) > 0.6
                axes.text(j, i, f"{scores[i, j]:.2f}", ha="center", va="center", fontsize=7,
                          color="black" if light else "white")
    figure.colorbar(image, ax=axes, label="cosine similarity")
    try:
        save_figure(figure, path, force)
    finally:
        plt.close(figure)
