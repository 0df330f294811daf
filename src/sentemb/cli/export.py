"""``sentemb export``: write a model's ONNX or OpenVINO export (model, tokenizer, manifest) into a folder."""

from __future__ import annotations

from pathlib import Path

import click

from sentemb.cli.common import EXIT_CODES_HELP, OutputError, handle_errors

EXAMPLES = """\b
Examples:
  sentemb export default ./minilm-onnx
  sentemb export ./my-model ./my-model-int8 --precision int8
  sentemb export default ./minilm-ov-int8 --runtime openvino --precision int8

\b
OUT receives model.onnx (or OpenVINO's model.xml and model.bin), tokenizer.json and manifest.json
(sha256 of each file, what the export was made from). The same files are cached (SENTEMB_CACHE,
default ~/.cache/sentemb), so `--backend onnx|openvino` loads them without exporting again.

"""


@click.command(epilog=EXAMPLES + EXIT_CODES_HELP)
@click.argument("model")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--precision",
    type=click.Choice(["fp32", "int8"], case_sensitive=False),
    default="fp32",
    show_default=True,
    help="fp32 (exact) or int8 (onnx: dynamic; openvino: static, calibrated). OpenVINO's bf16 runs the fp32 IR.",
)
@click.option(
    "--runtime",
    type=click.Choice(["onnx", "openvino"], case_sensitive=False),
    default="onnx",
    show_default=True,
    help="ONNX Runtime graph or OpenVINO IR.",
)
@click.option("--revision", default=None, help="Hub revision (commit, tag or branch) to pin.")
@click.option("--force", "-f", is_flag=True, help="Overwrite an existing export in OUT.")
@click.option("--allow-pickle", is_flag=True, help="Allow pickle (.bin) weights: only for models you trust.")
@click.option("--trust-remote-code", is_flag=True, help="Run the model repository's own code: only if you trust it.")
@handle_errors
def export(
    *,
    model: str,
    out: Path,
    precision: str,
    runtime: str,
    revision: str | None,
    force: bool,
    allow_pickle: bool,
    trust_remote_code: bool,
) -> None:
    """Export MODEL (folder, hub id or 'default') to ONNX or OpenVINO files in the folder OUT."""
    from sentemb.config import EncoderConfig, Precision
    from sentemb.export import MANIFEST_FILE, export_to
    from sentemb.models import read_model_folder, resolve_model

    if (out / MANIFEST_FILE).exists() and not force:
        raise OutputError(f"{out} already holds an export; pass --force to overwrite it")
    config = EncoderConfig(
        model=model, revision=revision, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code
    )
    resolved = resolve_model(config.model, config.revision, config.cache_dir)
    spec = read_model_folder(resolved.path, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    exported = export_to(
        spec, Precision(precision.lower()), out, runtime=runtime.lower(), trust_remote_code=trust_remote_code
    )
    click.echo(export_summary(exported.folder, runtime.lower(), precision.lower(), spec.task))


def export_summary(out: Path, runtime: str, precision: str, task: str = "embedding") -> str:
    """What was written, each model file with its size (OpenVINO's weights are in model.bin, not model.xml)."""
    from sentemb.export import MANIFEST_FILE, MODEL_FILES, TOKENIZER_FILE

    sizes = ", ".join(f"{name} ({(out / name).stat().st_size / 2**20:.1f} MB)" for name in MODEL_FILES[runtime])
    command = "rerank QUERY --docs FILE" if task == "rerank" else "encode"
    return (f"wrote {runtime} {precision} export to {out}: {sizes}, {TOKENIZER_FILE}, {MANIFEST_FILE} "
            f"and the model's configs: `sentemb {command} -m {out}` runs it without torch or the source model")
