"""``sentemb distill``: make a static embedding model (a vector per token, averaged) from any model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from sentemb.cli.common import (
    EXIT_CODES_HELP,
    InputError,
    OutputError,
    config_from_options,
    encoder_options,
    handle_errors,
)

EXAMPLES = """\b
Examples:
  sentemb distill default -o minilm-static
  sentemb distill ./my-model -o my-static --dim 128 --backend onnx
  sentemb distill default -o domain-static --vocabulary words.txt
  sentemb encode docs.txt -m minilm-static -o docs.npy

\b
Each token of the model's vocabulary goes through the model once (on --backend/--precision), PCA
reduces the vectors to --dim numbers and each is weighted by its token's rank (model2vec's recipe).
OUT loads in sentemb, model2vec and sentence-transformers (StaticEmbedding) with the same vectors.

"""


@click.command(epilog=EXAMPLES + EXIT_CODES_HELP)
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the static model into.")  # fmt: skip
@click.option("--dim", type=click.IntRange(min=1), default=256, show_default=True,
              help="Numbers per vector after PCA (at most the model's width).")  # fmt: skip
@click.option("--no-pca", is_flag=True, help="Keep the model's width and axes (no PCA).")
@click.option("--vocabulary", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="Extra words or phrases, one per line (WordPiece tokenizers).")  # fmt: skip
@click.option("--force", "-f", is_flag=True, help="Write into OUT even if it is not empty.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@encoder_options(positional_model=True)
@handle_errors
def distill(
    *, out: Path, dim: int, no_pca: bool, vocabulary: Path | None, force: bool, quiet: bool, **encoder_params: Any
) -> None:
    """Distil MODEL (folder, hub id or 'default') into a static embedding model in the folder OUT."""
    from sentemb.distillation import distill as run

    if out.exists() and any(out.iterdir()) and not force:
        raise OutputError(f"{out} is not empty; pass --force to write the static model into it")
    words = _read_words(vocabulary) if vocabulary is not None else None
    config = config_from_options(**encoder_params).replace(show_progress=None if not quiet else False)
    started = time.perf_counter()
    folder = run(config.model, out, dim=None if no_pca else dim, vocabulary=words, config=config)
    if not quiet:
        click.echo(f"wrote a static model of {config.model} to {folder} in {time.perf_counter() - started:.1f} s: "
                   f"`sentemb encode -m {folder}` runs it", err=True)  # fmt: skip


def _read_words(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return [line.strip() for line in lines if line.strip()]
