"""The base install (no torch, no transformers): ``sentemb encode``, ``sentemb serve`` and
``sentemb batch`` run the bundled default model in subprocesses whose imports of torch, transformers
and sentence-transformers fail (tests/light_blocker/sitecustomize.py), with the torch path's vectors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from waiting import read_until

ROOT = Path(__file__).resolve().parents[1]
BLOCKER = Path(__file__).resolve().parent / "light_blocker"
TEXTS = ["hello", "A man is playing a guitar.", "Ünïcödé, emoji 🙂 and punctuation!?"]
CLI = [sys.executable, "-c", "import sys; from sentemb.cli import main; sys.exit(main())"]
# Each base-install command finishes in well under a minute; one that runs on past HANG_S has hung, and
# its processes (Ray actors included) will have dumped their stacks to stderr (see light_blocker).
HANG_S = 600
DUMP = {"SENTEMB_TEST_DUMP_AFTER": "180", "PYTHONFAULTHANDLER": "1"}


def base_env(**extra: str) -> dict[str, str]:
    """This environment with torch and transformers hidden (and this checkout's sentemb first)."""
    paths = [str(BLOCKER), str(ROOT / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "HF_HUB_OFFLINE": "1", **DUMP, **extra}
    env.pop("RAY_ADDRESS", None)
    return env


def run_base(*args: str, **env: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([*CLI, *args], env=base_env(**env), cwd=ROOT, capture_output=True, text=True,
                              check=False, timeout=HANG_S)  # fmt: skip
    except subprocess.TimeoutExpired as exc:  # a hang becomes a failure that shows the stacks dumped so far
        pytest.fail(
            f"sentemb {args[0]} hung for {HANG_S} s (Ray actors write their stacks to the log named "
            f"below); its stderr:\n{str(exc.stderr)[-20000:]}"
        )


def test_the_blocker_hides_torch_and_transformers():
    probe = "import sentemb.extras as e; raise SystemExit(int(e.torch_installed()))"
    for module in ("torch", "transformers", "sentence_transformers"):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], env=base_env(), capture_output=True,
                              text=True, check=False)  # fmt: skip
        assert done.returncode != 0
        assert "blocked: base install" in done.stderr
    assert subprocess.run([sys.executable, "-c", probe], env=base_env(), check=False).returncode == 0


def test_encode_on_the_base_install_matches_torch(default_encoder):
    args = [a for text in TEXTS for a in ("--text", text)]
    done = run_base("encode", *args, "-o", "-")
    assert done.returncode == 0, done.stderr
    got = np.array([json.loads(line)["embedding"] for line in done.stdout.splitlines()], dtype=np.float32)
    assert np.abs(got - default_encoder.encode(TEXTS)).max() <= 1e-5


def test_auto_on_the_base_install_measures_only_the_installed_runtimes(tmp_path):
    from sentemb.extras import installed

    runtimes = {name for name, module in (("onnx", "onnxruntime"), ("openvino", "openvino")) if installed(module)}
    done = run_base("encode", "--text", "hello", "-o", "-", "--backend", "auto", SENTEMB_CACHE=str(tmp_path))
    assert done.returncode == 0, done.stderr
    choices = [json.loads(p.read_text()) for p in (tmp_path / "choice").glob("*.json")]
    if len(runtimes) < 2:  # one runtime: nothing to measure
        assert choices == []
        return
    (choice,) = choices
    assert set(choice["rates"]) == runtimes and not choice["errors"]
    assert choice["backend"] in runtimes


def test_a_model_that_needs_torch_fails_in_one_line(tiny_dirs):
    done = run_base("encode", "--text", "hi", "-o", "-", "--model", str(tiny_dirs["mpnet"]))
    assert done.returncode != 0
    assert "pip install 'sentemb[torch]'" in done.stderr
    assert "Traceback" not in done.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_on_the_base_install_matches_torch(default_encoder):
    pytest.importorskip("fastapi")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [*CLI, "serve", "--port", str(port), "--device", "cpu"]
    proc = subprocess.Popen(command, env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        read_until(proc, "is ready")  # the server's log line once its model has warmed up
        (model,) = [item["id"] for item in httpx.get(f"{url}/v1/models", timeout=5).json()["data"]]
        reply = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS, "model": model}, timeout=60)
        assert reply.status_code == 200, reply.text
        got = np.array([item["embedding"] for item in reply.json()["data"]], dtype=np.float32)
        assert np.abs(got - default_encoder.encode(TEXTS)).max() <= 1e-5
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


def test_batch_on_the_base_install_matches_torch(default_encoder, tmp_path):
    pytest.importorskip("ray")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    texts = [f"{text} number {i}" for i in range(20) for text in TEXTS[:2]]
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), tmp_path / "in.parquet")
    cache = tmp_path / "cache"
    done = run_base("batch", str(tmp_path / "in.parquet"), str(tmp_path / "out"), "--num-actors", "1", "--quiet",
                    "--backend", "auto", SENTEMB_CACHE=str(cache))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (cache / "choice").exists()  # the actor ran what the driver's header names; it measured nothing
    table = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "out").glob("part-*.parquet"))])
    table = table.sort_by("id")
    got = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    assert np.abs(got - default_encoder.encode(texts)).max() <= 1e-5
