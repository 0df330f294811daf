"""`sentemb serve` against infinity-emb serving the same all-MiniLM-L6-v2, each alone, with the same client.

    python benchmarks/serve_vs_infinity.py --infinity-venv .venv-infinity            # both servers, ~3 min
    python benchmarks/serve_vs_infinity.py --pin-client 1 --infinity-venv .venv-infinity   # client on core 1
    python benchmarks/serve_vs_infinity.py --only sentemb --sentemb-arg=--max-wait-ms --sentemb-arg=0

infinity runs in its own venv (``benchmarks/make_peer_venv.sh --infinity VENV`` builds it) with its
ONNX engine (optimum) and ``--pooling-method mean`` (its default for this model pools by CLS, and the
vectors are then wrong), on an ONNX export of the model made by that venv's optimum-cli (made here once,
under VENV/minilm-onnx, when missing). sentemb runs with its defaults (``--backend auto``: the backend
it measures fastest here) unless ``--backend`` is given (``onnx`` is the same runtime as infinity's). Each
server is measured alone on real STS sentences at POST /v1/embeddings (base64 vectors, as the openai
client asks); a 429 is honoured (the client sleeps its Retry-After):

  saturation: 16 closed-loop clients x 32 sentences, --seconds s  -> sentences/s (and 429s), p50/p99,
              the cores the server used (its main thread, its busiest threads, the rest) and the client's
  fixed load: 4 requests/s x 8 sentences (open loop), --seconds s -> p50/p99
  one sentence, sequential, --singles requests                    -> p50/p99
  RSS of the server (and its children) after the run; the served vectors against the library's.

The same encoder in-process (``sentemb.load(backend=...)``, 32-sentence calls and one large call) gives the
reference rate; it runs in a child process on every core. With ``--pin-client CPU`` the client runs on
that core only (the servers and the reference stay on all cores). Prints the CPU line first.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import psutil
from machine import cpu_line
from serve_load import free_port, stop_server, sts_sentences

MODEL_NAME = "all-MiniLM-L6-v2"
REFERENCE = """
import json, sys, time, numpy as np, sentemb
enc = sentemb.load(device="cpu", backend=sys.argv[3])
sentences = json.loads(open(sys.argv[1]).read())
enc.encode(sentences[:256], show_progress=False)
rates = {}
for name, size in (("calls_of_32", 32), ("one_call", len(sentences))):
    best = 0.0
    for _ in range(2):
        started = time.perf_counter()
        for i in range(0, len(sentences), size):
            enc.encode(sentences[i:i + size], show_progress=False)
        best = max(best, len(sentences) / (time.perf_counter() - started))
    rates[name] = best
np.save(sys.argv[2], enc.encode(sentences[:64], show_progress=False))
print(json.dumps(rates))
"""


def all_cores(command: list[str]) -> list[str]:
    """``command`` on every core (a child of a pinned client would inherit its one core)."""
    return ["taskset", "-c", f"0-{(os.cpu_count() or 1) - 1}", *command]


def infinity_folder(venv: Path, folder: Path | None) -> Path:
    """An ONNX export of the default model for infinity's optimum engine (made by its own optimum-cli)."""
    folder = folder or venv / "minilm-onnx"
    if not (folder / "model.onnx").exists():
        from sentemb.config import DEFAULT_MODEL
        from sentemb.models import resolve_model

        source = resolve_model(DEFAULT_MODEL).path  # the installed default model's folder
        export = [str(venv / "bin" / "optimum-cli"), "export", "onnx", "--model", str(source), "--task",
                  "feature-extraction", str(folder)]  # fmt: skip
        subprocess.run(export, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return folder


def start(kind: str, args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SENTEMB_API_KEY", None)
    cwd = None
    if kind == "sentemb":
        command = [sys.executable, "-c", "import sys; from sentemb.cli import main; sys.exit(main())", "serve",
                   "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "warning",
                   *(["--backend", args.backend] if args.backend else []), *args.sentemb_arg]  # fmt: skip
    else:  # infinity reads a local folder's ONNX file by a path relative to it: run it in the folder
        cwd = infinity_folder(args.infinity_venv, args.infinity_model)
        env.update(HF_HUB_CACHE=str(Path(tempfile.gettempdir()) / "infinity-hf-cache"), DO_NOT_TRACK="1",
                   INFINITY_ANONYMOUS_USAGE_STATS="0")  # fmt: skip
        command = [str(args.infinity_venv / "bin" / "infinity_emb"), "v2", "--model-id", ".", "--served-model-name",
                   MODEL_NAME, "--engine", "optimum", "--pooling-method", "mean", "--device", "cpu", "--host",
                   "127.0.0.1", "--port", str(port), "--url-prefix", "/v1", "--log-level", "warning"]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(all_cores(command), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} exited with {proc.returncode}; see {log}")
        try:
            if httpx.post(f"{url}/v1/embeddings", json=body(["warm up"]), timeout=10).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"{kind} did not answer in 180 s; see {log}")


def body(texts: list[str]) -> dict:
    return {"input": texts, "model": MODEL_NAME, "encoding_format": "base64"}


def vectors(url: str, texts: list[str]) -> np.ndarray:
    data = httpx.post(f"{url}/v1/embeddings", json=body(texts), timeout=60).json()["data"]
    return np.stack([np.frombuffer(base64.b64decode(row["embedding"]), dtype="<f4") for row in data])


def percentiles(latencies: list[float]) -> tuple[float, float]:
    lat = np.array(latencies or [float("nan")]) * 1000
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


async def saturation(url: str, requests: list[list[str]], clients: int, seconds: float) -> dict:
    """``clients`` closed-loop clients, each sending its next request when the last is answered."""
    latencies: list[float] = []
    status: Counter[str] = Counter()
    done = 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one(offset: int) -> None:
            nonlocal done
            i = offset
            while time.perf_counter() < stop_at:
                texts = requests[i % len(requests)]
                i += clients
                started = time.perf_counter()
                response = await client.post("/v1/embeddings", json=body(texts))
                status[str(response.status_code)] += 1
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                    done += len(texts)
                elif response.status_code == 429:  # as the openai client does: wait as told, then again
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))

        started = time.perf_counter()
        await asyncio.gather(*(one(k) for k in range(clients)))
        elapsed = time.perf_counter() - started
    p50, p99 = percentiles(latencies)
    return {"sentences_per_s": done / elapsed, "p50_ms": p50, "p99_ms": p99, "status": dict(status)}


async def fixed_load(url: str, requests: list[list[str]], rate: float, seconds: float) -> dict:
    """Open loop: a request every 1/``rate`` s whatever the answers, each timed from when it was due."""
    latencies: list[float] = []
    status: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def one(texts: list[str], due: float) -> None:
            response = await client.post("/v1/embeddings", json=body(texts))
            status[str(response.status_code)] += 1
            if response.status_code == 200:
                latencies.append(time.perf_counter() - due)

        tasks = []
        start = time.perf_counter()
        for k in range(int(rate * seconds)):
            due = start + k / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(requests[k % len(requests)], due)))
        await asyncio.gather(*tasks)
    p50, p99 = percentiles(latencies)
    return {"p50_ms": p50, "p99_ms": p99, "status": dict(status)}


def singles(url: str, sentences: list[str], count: int) -> dict:
    latencies = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for k in range(count):
            started = time.perf_counter()
            client.post("/v1/embeddings", json=body([sentences[k % len(sentences)]])).raise_for_status()
            latencies.append(time.perf_counter() - started)
    p50, p99 = percentiles(latencies)
    return {"p50_ms": p50, "p99_ms": p99}


def cpu_shares(server: subprocess.Popen, run: Callable[[], dict]) -> dict:
    """``run()``'s result plus the cores the server (with its children) and this client process (alone: the
    server is its child) used on average meanwhile."""

    def cpu(process: psutil.Process, children: bool) -> float:
        tree = [process, *process.children(recursive=True)] if children else [process]
        return sum(sum(p.cpu_times()[:2]) for p in tree)

    def threads(process: psutil.Process) -> dict[int, float]:
        return {t.id: t.user_time + t.system_time for t in process.threads()}

    client, served = psutil.Process(), psutil.Process(server.pid)
    before, started = (cpu(client, False), cpu(served, True), threads(served)), time.perf_counter()
    result = run()
    elapsed = time.perf_counter() - started
    used = {tid: (t - before[2].get(tid, 0.0)) / elapsed for tid, t in threads(served).items()}
    # the main thread (uvicorn's event loop), the threads busy a tenth of a core or more (the model's
    # streams: OpenVINO's for sentemb, ONNX Runtime's for infinity), and the rest
    main = used.pop(server.pid, 0.0)
    busy = sorted((c for c in used.values() if c >= 0.1), reverse=True)
    cores = {"client_cores": (cpu(client, False) - before[0]) / elapsed,
             "server_cores": (cpu(served, True) - before[1]) / elapsed,
             "threads": {"main": main, "busy": busy, "rest": sum(used.values()) - sum(busy)}}  # fmt: skip
    return {**result, **cores}


def rss_mb(proc: subprocess.Popen) -> float:
    process = psutil.Process(proc.pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 1e6


def measure(
    kind: str, args: argparse.Namespace, sentences: list[str], checked: list[str], reference: np.ndarray
) -> dict:
    """One server alone: its vectors of ``checked`` against ``reference`` (the library's), then the loads."""
    rng = random.Random(0)
    big = [rng.sample(sentences, 32) for _ in range(512)]
    small = [rng.sample(sentences, 8) for _ in range(512)]
    proc, url = start(kind, args, Path(tempfile.gettempdir()) / f"serve_vs_infinity.{kind}.log")
    try:
        served = vectors(url, checked)
        cosine = np.sum(served * reference, axis=1) / np.linalg.norm(served, axis=1) / np.linalg.norm(reference, axis=1)
        asyncio.run(saturation(url, big, args.clients, 3.0))  # warm-up
        result = {
            "identical": bool(np.array_equal(served, reference)),
            "max_abs_diff": float(np.abs(served - reference).max()),
            "min_cosine": float(cosine.min()),
            "saturation": cpu_shares(proc, lambda: asyncio.run(saturation(url, big, args.clients, args.seconds))),
            "fixed": asyncio.run(fixed_load(url, small, args.rate, args.seconds)),
            "single": singles(url, sentences, args.singles),
        }
        result["rss_mb"] = rss_mb(proc)
    finally:
        stop_server(proc)
    return result


def in_process(sentences: list[str], backend: str = "torch") -> tuple[dict, np.ndarray]:
    """The same encoder's rate in a child on every core, and its vectors of the first 64 sentences."""
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "s.json", Path(tmp) / "v.npy"
        source.write_text(json.dumps(sentences))
        command = all_cores([sys.executable, "-c", REFERENCE, str(source), str(out), backend])
        run = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True
        )
        return json.loads(run.stdout.strip().splitlines()[-1]), np.load(out)


def thread_split(split: dict) -> str:
    busy = " + ".join(f"{c:.2f}" for c in split["busy"])
    return f"main thread {split['main']:.2f} + busiest {busy} + rest {split['rest']:.2f}"


def report(kind: str, r: dict, reference_rate: float) -> None:
    s, f, o = r["saturation"], r["fixed"], r["single"]
    print(f"{kind:9} saturation {s['sentences_per_s']:6.0f} sentences/s ({s['sentences_per_s'] / reference_rate:4.0%} "
          f"of in-process; p50/p99 {s['p50_ms']:.0f}/{s['p99_ms']:.0f} ms; {s['status']}; cores: server "
          f"{s['server_cores']:.2f} = {thread_split(s['threads'])}, client {s['client_cores']:.2f}) | fixed "
          f"{f['p50_ms']:.1f}/{f['p99_ms']:.1f} ms {f['status']} | one sentence {o['p50_ms']:.1f}/{o['p99_ms']:.1f} ms"
          f" | RSS {r['rss_mb']:.0f} MB | vectors identical {r['identical']} (max diff {r['max_abs_diff']:.1e}, "
          f"min cosine {r['min_cosine']:.6f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--infinity-venv", type=Path, default=Path(__file__).resolve().parents[1] / ".venv-infinity")
    parser.add_argument("--infinity-model", type=Path, default=None, help="default: INFINITY_VENV/minilm-onnx")
    parser.add_argument("--only", choices=("sentemb", "infinity"), action="append", help="default: both")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the servers this many times")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of saturation and of fixed load")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rate", type=float, default=4.0)
    parser.add_argument("--singles", type=int, default=200)
    parser.add_argument("--pin-client", type=int, default=None, metavar="CPU", help="run the client on this core")
    parser.add_argument("--backend", default=None, help="sentemb's backend, served and in-process [the server's "
                        "default: auto]")
    parser.add_argument("--sentemb-arg", action="append", default=[], help="an extra `sentemb serve` option")
    args = parser.parse_args()
    print(cpu_line())
    sentences = sts_sentences()
    rng = random.Random(1)
    sample = rng.sample(sentences, 2048)
    backend = args.backend or "auto"
    rates, reference = in_process(sample, backend)
    print(f"in-process sentemb.load(backend={backend!r}): {rates['calls_of_32']:.0f} sentences/s in calls of 32, "
          f"{rates['one_call']:.0f} in one call of 2048")  # fmt: skip
    if args.pin_client is not None:
        os.sched_setaffinity(0, {args.pin_client})
        print(f"client pinned to CPU {args.pin_client}; servers on every core")
    for _ in range(args.rounds):
        for kind in args.only or ("sentemb", "infinity"):
            report(kind, measure(kind, args, sentences, sample[:64], reference), rates["calls_of_32"])


if __name__ == "__main__":
    main()
