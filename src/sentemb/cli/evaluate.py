"""``sentemb eval sts``: Spearman and Pearson correlation of cosine similarity with gold scores."""

from __future__ import annotations

import json
import os
from typing import Any

import click
import numpy as np

from sentemb.cli.common import EXIT_CODES_HELP, InputError, encoder_options, load_encoder
from sentemb.cli.output import check_figure, save_figure

EXAMPLES = """\b
Examples:
  sentemb eval sts sts-dev.csv
  sentemb eval sts sts-dev.csv --json
  sentemb eval sts sts-dev.csv --plot sts-dev.png --max-length 128

\b
FILE has the STS benchmark layout: tab separated genre, file, year, id, score, sentence1,
sentence2 (extra trailing fields are ignored).

"""


@click.group("eval", epilog=EXIT_CODES_HELP)
def eval_group() -> None:
    """Evaluate a model on a benchmark file."""


@eval_group.command(epilog=EXAMPLES + EXIT_CODES_HELP)
@click.argument("file", metavar="FILE")
@click.option("--plot", default=None, metavar="PNG", help="Scatter of predicted cosine against the gold score.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--force", "-f", is_flag=True, help="Overwrite an existing plot.")
@encoder_options
def sts(file: str, plot: str | None, as_json: bool, force: bool, **encoder_params: Any) -> None:
    """Spearman and Pearson (x100) of cosine(sentence1, sentence2) against the gold scores in FILE."""
    import sentemb

    if not os.path.isfile(file):
        raise InputError(f"{file}: no such file")
    if plot is not None:
        check_figure(plot, force, "--plot")
    try:
        data = sentemb.read_sts(file)
    except UnicodeDecodeError as exc:
        raise InputError(f"{file}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if len(data.scores) < 2:
        raise InputError(f"{file}: needs at least two sentence pairs, found {len(data.scores)}")
    encoder = load_encoder(**encoder_params)
    result = sentemb.evaluate_sts(encoder, data.sentences1, data.sentences2, data.scores)
    if as_json:
        click.echo(json.dumps({"file": file, "model": encoder.config.model, "n": result.n,
                               "spearman": round(result.spearman, 4), "pearson": round(result.pearson, 4)}))
    else:
        click.echo(f"{file}: {result.n:,} pairs  spearman {result.spearman:.2f}  pearson {result.pearson:.2f}")
    if plot is not None:
        title = (f"{encoder.config.model} on {os.path.basename(file)}\n"
                 f"spearman {result.spearman:.1f}, pearson {result.pearson:.1f} (n={result.n:,})")
        draw_scatter(result.cosine, np.asarray(data.scores), plot, force, title=title)
        click.echo(f"wrote the plot to {plot}", err=True)


def draw_scatter(predicted: np.ndarray, gold: np.ndarray, path: str, force: bool, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 5))
    axes.scatter(gold, predicted, s=6, alpha=0.4)
    axes.set_xlabel("gold score")
    axes.set_ylabel("predicted cosine similarity")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    try:
        save_figure(figure, path, force)
    finally:
        plt.close(figure)
