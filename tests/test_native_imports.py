"""Native extensions loaded into one process must not crash it, whatever order sentemb's code paths
import them in: every pair of the extras' native modules, both orders, each in a fresh process, through
the one place sentemb imports them (:func:`sentemb.extras.load_native`), and the CLI commands that mix
them, as separate processes (an in-process test inherits whatever the suite imported first)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from sentemb.extras import installed

# The compiled modules that sentemb's extras bring (torch, onnx, openvino, cli, batch, index, cluster).
NATIVE = ("usearch", "onnxruntime", "onnx", "openvino", "torch", "pyarrow", "ray", "tokenizers", "sklearn",
          "safetensors")  # fmt: skip
PRESENT = [name for name in NATIVE if installed(name)]
PAIRS = list(itertools.permutations(PRESENT, 2))


def _import_pair(pair: tuple[str, str]) -> tuple[tuple[str, str], int, str]:
    code = f"from sentemb.extras import load_native; load_native({pair[0]!r}); load_native({pair[1]!r})"
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    return pair, done.returncode, done.stderr[-500:]


@pytest.mark.slow
def test_every_pair_of_native_extensions_imports_in_both_orders():
    assert len(PRESENT) >= 8, f"the full install should have most native extras, found {PRESENT}"
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        results = list(pool.map(_import_pair, PAIRS))
    failed = [f"{a} then {b}: exit {code} {err}" for (a, b), code, err in results if code != 0]
    assert not failed, failed


def test_usearch_is_never_loaded_before_onnxruntime():
    """The one known crash (usearch 2.26.3+ then onnxruntime): the order is fixed where sentemb imports it."""
    if not (installed("usearch") and installed("onnxruntime")):
        pytest.skip("needs usearch and onnxruntime")
    code = (
        "import sys; from sentemb.extras import require\n"
        "require('usearch.index', 'index', 'test')\n"
        "assert 'onnxruntime' in sys.modules, 'usearch was imported before onnxruntime'\n"
        "import onnxruntime\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_cli_commands_that_mix_the_index_and_a_runtime_run_as_processes(tmp_path, default_model_dir):
    """Index build, then search by query file, by text and through 'index search', each its own process."""
    if not installed("usearch"):
        pytest.skip("needs the index extra")
    texts = tmp_path / "docs.txt"
    texts.write_text("A man is playing a guitar.\nThe weather is lovely today.\nSomeone plays an instrument.\n")
    queries = tmp_path / "q.txt"
    queries.write_text("music\n")
    env = {**os.environ, "SENTEMB_BACKEND": "onnx"}

    def sentemb(*args: str) -> str:
        command = [sys.executable, "-c", "from sentemb.cli import main; main()", *args]
        done = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, f"sentemb {' '.join(args)}: exit {done.returncode}\n{done.stderr[-2000:]}"
        return done.stdout

    sentemb("encode", str(texts), "-o", "v.parquet", "--backend", "onnx")
    sentemb("index", "build", "v.parquet", "-o", "idx")
    assert "guitar" in sentemb("search", "--index", "idx", "--queries", str(queries), "--corpus", str(texts), "-k", "2")
    assert "guitar" in sentemb("search", "music", "--index", "idx", "--corpus", str(texts), "-k", "2")
    sentemb("index", "search", "idx", "--queries", str(queries), "-k", "2")
