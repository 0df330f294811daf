"""Run the graph a model folder ships (:mod:`sentemb.models.prebuilt`) instead of exporting it, and write
the model's heads beside an export so that the folder loads on its own."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sentemb.errors import ModelNotFoundError
from sentemb.models.prebuilt import GRAPH_SUFFIXES, HUB_FILES, graph_files

if TYPE_CHECKING:
    from sentemb.export.manifest import Exported
    from sentemb.models.folder import ModelSpec
    from sentemb.tokenize import LoadedTokenizer


@dataclass(frozen=True)
class Prebuilt:
    """A graph file shipped with the model folder and the folder whose tokenizer goes with it."""

    model: Path
    tokenizer_folder: Path
    graph: str = "padded"  # as transformers runs the model (what sentemb knows of a shipped file)

    def load_tokenizer(self) -> LoadedTokenizer:
        from sentemb.tokenize import load_hf_tokenizer

        return load_hf_tokenizer(str(self.tokenizer_folder))


def find_prebuilt(spec: ModelSpec, runtime: str, file_name: str | None = None) -> Exported | Prebuilt | None:
    """The graph ``runtime`` should run for ``spec`` instead of exporting it, or None (export as usual)."""
    from sentemb.export.manifest import check_export

    folder = spec.transformer_dir
    if file_name is not None:
        for candidate in (folder / file_name, folder / "onnx" / file_name, folder / "openvino" / file_name):
            if candidate.is_file():
                return Prebuilt(candidate, folder)
        found = [str(p.relative_to(folder)) for p in graph_files(folder) if p.suffix in GRAPH_SUFFIXES]
        raise ModelNotFoundError(f"{folder} has no graph file {file_name!r}; it has: {', '.join(found) or 'none'}")
    if (folder / "manifest.json").is_file():
        exported = check_export(folder)
        if exported is None:
            raise ModelNotFoundError(
                f"{folder} is a sentemb export whose files do not match its manifest (damaged or partial); "
                "export it again with `sentemb export`"
            )
        if runtime in (exported.runtime, "openvino"):
            return exported
        raise ModelNotFoundError(
            f"{folder} is an OpenVINO export; load it with backend='openvino' (or export with --runtime onnx)"
        )
    for name in HUB_FILES[runtime]:
        if (folder / name).is_file():
            return Prebuilt(folder / name, folder)
    return None


# Small files of the transformer folder that say how to tokenise and how long inputs may be.
_CONFIGS = ("config.json", "tokenizer_config.json", "special_tokens_map.json", "sentence_bert_config.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".ckpt", ".pkl")


def write_heads(spec: ModelSpec, out: Path) -> None:
    """Copy what turns ``spec``'s token embeddings into sentence vectors (modules.json, pooling, Dense,
    normalise, prompts, configs) beside an export in ``out``, so the export loads as a model on its own."""
    for name in _CONFIGS:
        if (spec.transformer_dir / name).is_file():
            shutil.copyfile(spec.transformer_dir / name, out / name)
    modules_file = spec.root / "modules.json"
    if not modules_file.is_file():
        return
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    for module in modules:
        path = str(module.get("path", ""))
        if str(module.get("type", "")).endswith("Transformer"):
            module["path"] = ""
        elif path and (spec.root / path).is_dir():
            shutil.copytree(spec.root / path, out / path, dirs_exist_ok=True)
    (out / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    for name in ("sentence_bert_config.json", "config_sentence_transformers.json"):
        if (spec.root / name).is_file() and not (out / name).is_file():
            shutil.copyfile(spec.root / name, out / name)
