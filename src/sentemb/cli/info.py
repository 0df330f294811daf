"""``sentemb info``: what a model is and where its files came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sentemb.cli.options import EXIT_CODES_HELP, encoder_options, load_encoder

EXAMPLES = """\b
Examples:
  sentemb info
  sentemb info ./my-model --json
  sentemb info sentence-transformers/all-MiniLM-L6-v2 --backend onnx

"""


@click.command(epilog=EXAMPLES + EXIT_CODES_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@encoder_options(positional_model=True)
def info(as_json: bool, **encoder_params: Any) -> None:
    """Dimension, pooling, normalisation, max length, backbone, backend, files and sha256 of MODEL."""
    encoder = load_encoder(**encoder_params)
    facts = encoder.describe()
    facts["files"] = model_files(encoder.resolved.path)
    if as_json:
        click.echo(json.dumps(facts, indent=2, default=str))
        return
    width = max(len(key) for key in facts)
    for key, value in facts.items():
        if isinstance(value, dict):
            click.echo(f"{key:<{width}}")
            for name, digest in value.items():
                click.echo(f"  {name}: {digest}")
        else:
            click.echo(f"{key:<{width}}  {value}")


def model_files(folder: Path) -> dict[str, str]:
    """sha256 of every file in the model folder (the weights' digests are also under ``sha256``)."""
    from sentemb.models.resolve import sha256_file

    return {
        str(path.relative_to(folder)): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }
