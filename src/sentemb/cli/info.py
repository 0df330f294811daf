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

from sentemb.cli.options import EXIT_CODES_HELP, config_from_options, encoder_options, load_encoder
from sentemb.errors import ConfigError

EXAMPLES = """\b
Examples:
  sentemb info
  sentemb info ./my-model --json
  sentemb info sentence-transformers/all-MiniLM-L6-v2 --backend onnx --check

\b
Without --check, dim comes from the model's config.json and backend/device are what would be
asked for; --check loads the backend and reports what runs (dim from a real forward pass setup).

"""
# config.json keys that hold the width of the token embeddings (= the sentence vector's dim).
_WIDTH_KEYS = ("hidden_size", "d_model", "dim", "n_embd")


@click.command(epilog=EXAMPLES + EXIT_CODES_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--check", is_flag=True, help="Load the backend too and report what runs (slower: seconds).")
@encoder_options(positional_model=True)
def info(as_json: bool, check: bool, **encoder_params: Any) -> None:
    """Dimension, pooling, normalisation, max length, backbone, backend, files and sha256 of MODEL."""
    if check:
        encoder = load_encoder(**encoder_params)
        facts = encoder.describe().to_dict()
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
    from sentemb.backends import _gpu_present, resolve_choice
    from sentemb.encoder import BATCH_SIZE
    from sentemb.models import read_model_folder, resolve_model, wanted_graphs
    from sentemb.models.resolve import sha256_file

    config = config_from_options(**encoder_params)
    resolved = resolve_model(config.model, config.revision, config.cache_dir, graphs=wanted_graphs(config))
    spec = read_model_folder(
        resolved.path, allow_pickle=config.allow_pickle, trust_remote_code=config.trust_remote_code
    )
    if config.max_length is not None and config.max_length > spec.limit:
        raise ConfigError(f"max_length={config.max_length} is more than this model takes ({spec.limit} tokens)")
    chosen = resolve_choice(config)
    device = chosen.device if chosen.device != "auto" else ("cuda" if _gpu_present() else "cpu")
    facts: dict[str, object] = {
        "model": config.model,
        "source": resolved.source,
        "path": str(resolved.path),
        "revision": resolved.revision,
        "model_type": spec.model_type,
        "dim": _width(spec.transformer_dir / "config.json") if spec.static is None else None,
        "pooling": (config.pooling or spec.pooling).value,
        "normalize": spec.normalize if config.normalize is None else config.normalize,
        "max_length": config.max_length or spec.max_length,
        "batch_size": config.batch_size or BATCH_SIZE[device.split(":")[0]],
        "long_text": config.long_text.value,
        "backend": chosen.backend.value,
        "device": device,
        "precision": chosen.precision.value,
        "sha256": {p.name: sha256_file(p) for p in spec.weights},
        "checked": False,
    }
    if spec.static is not None:  # a table lookup runs on the CPU in float32 whatever was asked
        width = spec.dense[-1].out_features if spec.dense else spec.static.width
        facts |= {"dim": width, "backend": "static", "device": "cpu", "precision": "fp32"}
    return facts, resolved.path


def _width(config_path: Path) -> int | None:
    config = json.loads(config_path.read_text(encoding="utf-8"))
    return next((int(config[key]) for key in _WIDTH_KEYS if isinstance(config.get(key), int)), None)


def model_files(folder: Path) -> dict[str, str]:
    """sha256 of every file in the model folder (the weights' digests are also under ``sha256``)."""
    from sentemb.models.resolve import sha256_file

    return {
        str(path.relative_to(folder)): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }
