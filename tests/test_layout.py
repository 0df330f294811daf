"""The package layout the README's Development section draws: each part imports only from the parts
listed before it, so the pipeline has one direction and no cycles."""

import ast
from pathlib import Path

import sentemb

LAYERS = [
    "errors", "extras", "files", "options", "config", "facts", "scoped", "machine", "models", "plan", "tokenize",
    "prompts", "batching", "pooling", "heads", "similarity", "sparse_vectors", "export", "backends", "encoder",
    "rerank", "sparse", "distillation", "evaluation", "retrieval", "server", "batch", "cli", "demo",
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


def test_modules_and_functions_stay_small_enough_to_read():
    """No module over 400 lines and no function over 60, in the package and the benchmark scripts."""
    root = Path(__file__).resolve().parents[1]
    too_long = []
    for path in [*(root / "src" / "sentemb").rglob("*.py"), *(root / "benchmarks").glob("*.py")]:
        source = path.read_text(encoding="utf-8")
        if source.count("\n") > 400:
            too_long.append(f"{path.name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    too_long.append(f"{path.name}:{node.lineno} {node.name}() is {length} lines")
    assert not too_long, too_long
