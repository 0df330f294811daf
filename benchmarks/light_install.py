"""The base install (no torch) next to [all]: installed size, `sentemb encode --text hello -o -`
(wall time and peak RSS), import time, a cold `sentemb serve` until /ready, and throughput on the
default model with the same runtime (ONNX Runtime, fp32).

    .venv/bin/python benchmarks/light_install.py [--venv NAME=PATH ...]

"base" runs this venv with torch, transformers and sentence-transformers hidden
(tests/light_blocker); "[all]" runs it as is. Sizes of base, [all] and sentence-transformers are the
installed files of each dependency closure in this venv; --venv adds `du` of other venvs' site-packages
(fastembed). Exports go to a throw-away cache, made once before timing. Runs alternate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from cli_startup import cpu_line

ROOT = Path(__file__).resolve().parents[1]
BLOCKER = ROOT / "tests" / "light_blocker"
CLI = [sys.executable, "-c", "import sys; from sentemb.cli import main; sys.exit(main())"]
BASE = ["numpy", "tokenizers", "safetensors", "huggingface-hub", "tqdm", "onnxruntime", "onnx"]
ALL = [*BASE, "torch", "transformers", "onnxscript", "openvino", "nncf", "click", "rich", "pyarrow", "matplotlib",
       "fastapi", "uvicorn", "httptools", "uvloop", "prometheus-client", "ray", "usearch", "scikit-learn"]  # fmt: skip


def closure(names: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = [n.lower().replace("_", "-") for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            todo.append(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0].lower().replace("_", "-"))
    return seen


def size_mb(names: set[str]) -> float:
    total = 0
    for name in names:
        for file in metadata.distribution(name).files or []:
            path = Path(file.locate())
            total += path.stat().st_size if path.is_file() else 0
    return total / 2**20


def env_for(install: str, cache: str) -> dict[str, str]:
    paths = [str(ROOT / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    if install == "base":
        paths.insert(0, str(BLOCKER))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "SENTEMB_CACHE": cache, "HF_HUB_OFFLINE": "1"}


def measured(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one fresh process."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
               "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024; "
               "print(time.perf_counter() - t, rss)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", wrapper, *command], env=env, check=True, capture_output=True, text=True)
    wall, rss = out.stdout.split()
    return float(wall), float(rss)


def cold_serve(env: dict[str, str]) -> float:
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.perf_counter()
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--device", "cpu", "--backend", "onnx"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
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
    parser.add_argument("--venv", action="append", default=[], help="NAME=PATH of another venv to size")
    options = parser.parse_args()
    print(cpu_line())
    import sentence_transformers  # noqa: F401  (the reference library must be installed here)

    sizes = {"base": closure(BASE), "[all]": closure(ALL), "sentence-transformers": closure(["sentence-transformers"])}
    for name, dists in sizes.items():
        print(f"installed size {name:>22}: {size_mb(dists):7.0f} MB ({len(dists)} distributions)")
    for item in options.venv:
        name, path = item.split("=", 1)
        site = next(Path(path).glob("lib/python*/site-packages"))
        du = subprocess.run(["du", "-sm", str(site)], capture_output=True, text=True, check=True).stdout.split()[0]
        print(f"installed size {name:>22}: {float(du):7.0f} MB (du -sm site-packages)")
    sts = str(ROOT.parent / "shared" / "data" / "stsb" / "sts-dev.csv")
    with tempfile.TemporaryDirectory() as base_cache, tempfile.TemporaryDirectory() as all_cache:
        caches = {"base": base_cache, "[all]": all_cache}
        for install, cache in caches.items():  # the export, once, outside the timings
            subprocess.run([*CLI, "export", "default", str(Path(cache) / "out")], env=env_for(install, cache),
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        results: dict[str, dict[str, list[float]]] = {k: {} for k in caches}
        for _ in range(options.runs):
            for install, cache in caches.items():
                env, row = env_for(install, cache), results[install]
                wall, rss = measured([*CLI, "encode", "--backend", "onnx", "--text", "hello", "-o", "-"], env)
                row.setdefault("encode s", []).append(wall)
                row.setdefault("encode peak RSS MB", []).append(rss)
                imported = measured([sys.executable, "-c", "import sentemb.encoder"], env)[0]
                row.setdefault("import s", []).append(imported)
                row.setdefault("serve until /ready s", []).append(cold_serve(env))
                rate = subprocess.run([sys.executable, "-c", THROUGHPUT, sts], env=env, check=True,
                                      capture_output=True, text=True).stdout  # fmt: skip
                row.setdefault("sentences/s", []).append(float(rate))
        for install, row in results.items():
            print(install, json.dumps({k: round(statistics.median(v), 3) for k, v in row.items()}))
        ratio = statistics.median(results["base"]["sentences/s"]) / statistics.median(results["[all]"]["sentences/s"])
        print(f"throughput base / [all] (same runtime, onnx fp32): {ratio:.2f}x")


if __name__ == "__main__":
    main()
