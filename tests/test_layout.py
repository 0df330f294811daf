"""The package layout the README's Development section draws: each part imports only from the parts
listed before it, so the pipeline has one direction and no cycles."""

import ast
from pathlib import Path

import sentemb

LAYERS = [
    "errors", "options", "config", "facts", "scoped", "models", "tokenize", "prompts", "batching", "pooling",
    "similarity", "export", "backends", "encoder", "evaluation", "retrieval", "server", "batch", "cli", "demo",
]  # fmt: skip


def test_each_part_imports_only_from_the_parts_above_it():
    root = Path(sentemb.__file__).parent
    wrong = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[0] == "__init__":
            continue
        assert parts[0] in LAYERS, f"{path} belongs to no layer; add it to LAYERS and to the README"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sentemb."):
                other = node.module.split(".")[1]
                if LAYERS.index(other) > LAYERS.index(parts[0]):
                    wrong.append(f"{path.relative_to(root)}:{node.lineno} imports {node.module}")
    assert not wrong, wrong
