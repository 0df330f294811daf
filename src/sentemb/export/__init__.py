"""Export a model once and keep it: torch -> ONNX, graph fusion or OpenVINO IR, int8, a checked cache.

Cache layout (root: ``EncoderConfig.export_dir``, else ``$SENTEMB_CACHE``, else
``$XDG_CACHE_HOME/sentemb``, else ``~/.cache/sentemb``)::

    <root>/<runtime>/<model_type>-<precision>-<key[:20]>/
        model.onnx       runtime onnx: the graph, fp32 or int8 weights (signed, per output channel)
        model.xml/.bin   runtime openvino: the IR, fp32 or int8 (static: calibrated activations);
                         BERT-family graphs are packed (linear layers on the real tokens only)
        tokenizer.json   the model's fast tokenizer, so loading needs neither transformers nor torch
        manifest.json    written last: the recipe, tokenizer facts, sha256 of each file

The package, one concept per module:

    recipe.py       Recipe: what an export is made from and how; its sha256 is the cache key
    manifest.py     Exported, the manifest written last and checked on every load
    cache.py        ensure_export / export_to: find, build once, publish atomically (safe across processes)
    build.py        recipe -> files: the steps below, then the manifest (needs torch and transformers)
    torch_onnx.py   torch.onnx.export of the transformer, padded or packed
    packed.py       the packed BERT graph and its parity check against the model's own output
    onnx_graph.py   ONNX Runtime fusions and dynamic int8
    keep_fp32.py    which MatMuls an int8 export keeps fp32 (the recipe's roles -> the graph's node names)
    openvino_ir.py  OpenVINO IR and NNCF's static int8

Loading a cached export imports neither torch nor transformers. The model's own folder is only read.
"""

from sentemb.export.cache import ensure_export, export_root, export_to, find_export
from sentemb.export.manifest import MANIFEST_FILE, TOKENIZER_FILE, Exported, check_export
from sentemb.export.recipe import (
    CALIBRATION_FILE,
    EXPORTABLE,
    MODEL_FILES,
    PACKED_TYPES,
    RUNTIME_LABELS,
    Recipe,
    recipe_for,
)
from sentemb.models.resolve import CACHE_ENV

__all__ = [
    "CACHE_ENV",
    "CALIBRATION_FILE",
    "EXPORTABLE",
    "MANIFEST_FILE",
    "MODEL_FILES",
    "PACKED_TYPES",
    "RUNTIME_LABELS",
    "TOKENIZER_FILE",
    "Exported",
    "Recipe",
    "check_export",
    "ensure_export",
    "export_root",
    "export_to",
    "find_export",
    "recipe_for",
]
