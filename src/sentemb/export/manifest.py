"""An export folder's manifest: written last, it records the recipe and the sha256 of every file,
so that a damaged or partial folder is recognised (and rebuilt) instead of loaded."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sentemb.export.recipe import MODEL_FILES, Recipe
from sentemb.models.resolve import sha256_file

if TYPE_CHECKING:
    from sentemb.tokenize import LoadedTokenizer

log = logging.getLogger("sentemb")

TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Exported:
    """A checked export folder and what its manifest says about the tokenizer."""

    folder: Path
    uses_type_ids: bool
    pad_id: int
    runtime: str = "onnx"
    graph: str = "padded"  # the recipe's: padded, packed or first-token

    @property
    def model(self) -> Path:
        return self.folder / MODEL_FILES[self.runtime][0]

    @property
    def tokenizer(self) -> Path:
        return self.folder / TOKENIZER_FILE

    @property
    def files(self) -> tuple[str, ...]:
        """Every file of the export, the manifest last."""
        return (*MODEL_FILES[self.runtime], TOKENIZER_FILE, MANIFEST_FILE)

    def load_tokenizer(self) -> LoadedTokenizer:
        """The tokenizer saved beside the model (no transformers import)."""
        from tokenizers import Tokenizer

        from sentemb.tokenize import LoadedTokenizer, prepare_tokenizer

        tokenizer = prepare_tokenizer(Tokenizer.from_file(str(self.tokenizer)))
        return LoadedTokenizer(tokenizer, self.uses_type_ids, self.pad_id)


def write_manifest(folder: Path, recipe: Recipe, tokenizer: LoadedTokenizer) -> Exported:
    """Write ``manifest.json`` (last: it makes the folder complete) and return the export."""
    exported = Exported(folder, tokenizer.uses_type_ids, tokenizer.pad_id, recipe.runtime, recipe.graph)
    manifest = {
        "key": recipe.key,
        "recipe": recipe.to_json(),
        "runtime": recipe.runtime,
        "uses_type_ids": tokenizer.uses_type_ids,
        "pad_id": tokenizer.pad_id,
        "sha256": {name: sha256_file(folder / name) for name in exported.files[:-1]},
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return exported


def check_export(folder: Path, key: str | None = None) -> Exported | None:
    """The export in ``folder`` if its manifest is readable (and made from ``key``, when given) and
    every file has its recorded sha256; None for a missing, partial or damaged folder."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        if key is not None and manifest["key"] != key:
            return None
        runtime = manifest.get("runtime", "onnx")
        graph = str(manifest.get("recipe", {}).get("graph", "padded"))
        exported = Exported(folder, bool(manifest["uses_type_ids"]), int(manifest["pad_id"]), runtime, graph)
        if set(manifest["sha256"]) != set(exported.files[:-1]):
            return None
        for name, digest in manifest["sha256"].items():
            if sha256_file(folder / name) != digest:
                log.warning("sentemb: %s is damaged (sha256 differs from its manifest)", folder / name)
                return None
        return exported
    except (OSError, ValueError, KeyError, TypeError):
        return None
