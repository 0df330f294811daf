"""``sentemb info``: what a model is and where its files came from.

By default it reads the model folder only (config, pooling, sha256 of the files): no backend is
started, so it answers in a fraction of a second. ``--check`` builds the encoder as the other
commands would (torch, or the backend asked for) and reports what actually runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sentemb.cli.common import EXIT_CODES_HELP, config_from_options, encoder_options, load_encoder

EXAMPLES = """\b
Examples:
  sentemb info
  sentemb info ./my-model --json
  sentemb info sentence-transformers/all-MiniLM-L6-v2 --backend onnx --check

\b
Without --check, dim comes from the model folder (the transformer's width, its Dense layers and
truncate_dim) and backend/device/precision are what the rules choose (auto is measured only when a
backend is built); --check loads the backend and reports what runs, with its plan.

"""


@click.command(epilog=EXAMPLES + EXIT_CODES_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--check", is_flag=True, help="Load the backend too and report what runs (slower: seconds).")
@encoder_options(positional_model=True)
def info(as_json: bool, check: bool, **encoder_params: Any) -> None:
    """Dimension, pooling, normalisation, max length, backbone, backend, files and sha256 of MODEL."""
    if check:
        encoder = load_encoder(**encoder_params)
        facts = encoder.describe().to_dict()
        facts["plan"] = encoder.plan.to_dict()
        facts["checked"] = True
        folder = encoder.resolved.path
    else:
        facts, folder = folder_facts(**encoder_params)
    facts["files"] = model_files(folder)
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


def folder_facts(**encoder_params: Any) -> tuple[dict[str, object], Path]:
    """The keys of ``Encoder.describe()`` from the model folder and the options alone (no backend)."""
    from sentemb.machine import Machine
    from sentemb.plan import describe_model, open_model

    config = config_from_options(**encoder_params)
    machine = Machine.here()
    resolved, spec = open_model(config, machine)
    facts = describe_model(config, resolved, spec, machine).to_dict()
    facts["checked"] = False
    return facts, resolved.path


def model_files(folder: Path) -> dict[str, str]:
    """sha256 of every file in the model folder (the weights' digests are also under ``sha256``)."""
    from sentemb.models.resolve import sha256_file

    return {
        str(path.relative_to(folder)): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }
