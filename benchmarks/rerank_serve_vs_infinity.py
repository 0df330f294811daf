"""`sentemb serve --reranker` against infinity-emb serving the same cross-encoder, on the same load:
throughput at saturation (closed loop, --clients concurrent) and latency at a fixed rate (open loop).

    PYTHONPATH=src .venv/bin/python benchmarks/rerank_serve_vs_infinity.py \\
        --infinity /work/venv-infinity/bin/infinity_emb --duration 30

Each request is one of rerank_bench.py's queries with its 30 passages of 60-120 tokens (30 pairs of
work), top_n 10: sentemb's ``POST /v1/rerank``, infinity's ``POST /rerank`` (both Cohere's shape).
infinity runs in its own venv (it pins numpy 1.x, click, uvicorn) as a subprocess; its torch engine
needs sentence-transformers, which that venv lacks, so it runs its ``optimum`` engine (ONNX Runtime, the
CPU engine it recommends) on sentence-transformers' ONNX export of the model (rerank_bench.st_onnx_folder,
copied to a temporary folder with the graph at its top, where infinity looks). The servers run side by side,
measured in turns (saturation A, B, A, B; then the fixed rate), and each one's scores of the same
requests are compared with sentemb fp32's, which equal sentence-transformers' within 1e-5.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from machine import cpu_line
from rerank_bench import CANDIDATES, MODEL_DIR, STSB, build_queries, st_onnx_folder, top10_same
from serve_load import free_port, start_server, stop_server


def start_infinity(binary: Path, folder: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # Run in the model folder as "--model-id .": infinity 0.0.78 hands optimum 2.x the ONNX file's path as
    # the file name, which optimum only finds when that path is relative to the folder.
    command = [str(binary), "v2", "--model-id", ".", "--served-model-name", "stsb-cross-encoder", "--engine",
               "optimum", "--device", "cpu", "--port", str(port), "--host", "127.0.0.1", "--no-model-warmup",
               "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen(command, cwd=folder, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"infinity exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"infinity did not start in 600 s; see {log}")


class Target:
    """One server: its rerank route and how its answers read."""

    def __init__(self, label: str, url: str, route: str) -> None:
        self.label, self.url, self.route = label, url, route
        self.refused = 0  # 429s, each retried after its Retry-After: the latency counts the wait

    async def rerank(self, client: httpx.AsyncClient, body: dict) -> list[dict]:
        while True:
            response = await client.post(self.url + self.route, json=body)
            if response.status_code != 429:
                break
            self.refused += 1
            await asyncio.sleep(min(1.0, float(response.headers.get("retry-after", "0.05"))))
        response.raise_for_status()
        return list(response.json()["results"])


async def scores(target: Target, bodies: list[dict]) -> np.ndarray:
    """Every document's score, request by request (top_n = all)."""
    async with httpx.AsyncClient(timeout=300) as client:
        out = []
        for body in bodies:
            results = await target.rerank(client, {**body, "top_n": len(body["documents"])})
            row = np.zeros(len(body["documents"]), dtype=np.float32)
            for hit in results:
                row[hit["index"]] = hit["relevance_score"]
            out.append(row)
    return np.concatenate(out)


async def saturate(target: Target, bodies: list[dict], clients: int, duration: float) -> tuple[float, list[float]]:
    """Closed loop: ``clients`` send the next request when the last is answered; (requests/s, latencies)."""
    latencies: list[float] = []
    stop = time.perf_counter() + duration

    async def client_loop(k: int, client: httpx.AsyncClient) -> None:
        i = k
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await target.rerank(client, bodies[i % len(bodies)])
            latencies.append(time.perf_counter() - started)
            i += clients

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as client:
        await asyncio.gather(*(client_loop(k, client) for k in range(clients)))
    return len(latencies) / (time.perf_counter() - started), latencies


async def fixed_rate(target: Target, bodies: list[dict], rate: float, duration: float) -> list[float]:
    """Open loop: a request every 1/rate s whatever the answers do; every request's latency."""
    latencies: list[float] = []

    async def one(body: dict, client: httpx.AsyncClient) -> None:
        started = time.perf_counter()
        await target.rerank(client, body)
        latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=256)) as client:
        tasks, begin = [], time.perf_counter()
        for i in range(int(rate * duration)):
            await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(bodies[i % len(bodies)], client)))
        await asyncio.gather(*tasks)
    return latencies


def ms(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:.0f}"


def measure(targets: list[Target], bodies: list[dict], args: argparse.Namespace) -> None:
    reference = asyncio.run(scores(targets[0], bodies[:10]))
    print("\nscores of 10 requests (300 pairs) against the first row's:")
    for target in targets[1:]:
        theirs = asyncio.run(scores(target, bodies[:10]))
        print(f"  {target.label}: max abs diff {np.abs(theirs - reference).max():.5f}, "
              f"top-10 order same {top10_same(theirs, reference):.0%}")  # fmt: skip
    saturation: dict[str, list[tuple[float, list[float]]]] = {t.label: [] for t in targets}
    for _ in range(args.rounds):
        for target in targets:
            asyncio.run(saturate(target, bodies, args.clients, 5))  # warm-up at this concurrency
            saturation[target.label].append(asyncio.run(saturate(target, bodies, args.clients, args.duration)))
    rate = args.rate or 0.5 * min(max(r for r, _ in runs) for runs in saturation.values())
    fixed = {t.label: asyncio.run(fixed_rate(t, bodies, rate, args.duration)) for t in targets}
    print(f"\nsaturation: {args.clients} clients, closed loop, {args.duration:.0f} s x {args.rounds} rounds in turns; "
          f"fixed load: {rate:.2f} requests/s open loop for {args.duration:.0f} s; a request = 1 query x "
          f"{CANDIDATES} passages, top_n 10\n")  # fmt: skip
    print("| server | requests/s at saturation (rounds) | pairs/s | p50 / p99 ms at saturation "
          f"| p50 / p99 ms at {rate:.2f} req/s | 429s retried |\n|---|---:|---:|---:|---:|---:|")  # fmt: skip
    for target in targets:
        runs = saturation[target.label]
        best = max(r for r, _ in runs)
        lat = [x for _, times in runs for x in times]
        rounds = ", ".join(f"{r:.2f}" for r, _ in runs)
        steady = fixed[target.label]
        print(f"| {target.label} | {best:.2f} ({rounds}) | {best * CANDIDATES:.0f} | {ms(lat, 50)} / {ms(lat, 99)} "
              f"| {ms(steady, 50)} / {ms(steady, 99)} | {target.refused} |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--infinity", type=Path, default=Path("/work/venv-infinity/bin/infinity_emb"))
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase [30]")
    parser.add_argument("--rounds", type=int, default=2, help="saturation rounds per server, in turns [2]")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients at saturation [8]")
    parser.add_argument("--rate", type=float, default=0.0, help="fixed load, requests/s [half the slower saturation]")
    parser.add_argument("--backend", default="openvino", help="sentemb serve --backend [openvino]")
    parser.add_argument("--int8", action="store_true", help="also serve sentemb int8")
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    queries = build_queries(MODEL_DIR, STSB, 50)
    bodies = [{"query": q, "documents": passages, "top_n": 10} for q, passages in queries]
    work = Path(tempfile.mkdtemp(prefix="rerank-vs-infinity-"))
    shutil.copytree(st_onnx_folder(MODEL_DIR), work / "model")
    (work / "model" / "onnx" / "model.onnx").rename(work / "model" / "model.onnx")  # where infinity finds it
    import sentemb

    for precision in ["fp32", *(["int8"] if args.int8 else [])]:  # exported once here, before a server waits on it
        sentemb.load_reranker(str(MODEL_DIR), device="cpu", backend=args.backend, precision=precision)
    procs = []
    try:
        targets = []
        for precision in ["fp32", *(["int8"] if args.int8 else [])]:
            extra = ["--reranker", str(MODEL_DIR), "--backend", args.backend, "--precision", precision]
            proc, url = start_server(extra, work / f"sentemb-{precision}.log")
            procs.append(proc)
            targets.append(Target(f"sentemb serve {args.backend} {precision} (/v1/rerank)", url, "/v1/rerank"))
        proc, url = start_infinity(args.infinity, work / "model", work / "infinity.log")
        procs.append(proc)
        targets.append(Target("infinity-emb 0.0.78 optimum fp32 (/rerank)", url, "/rerank"))
        print(f"servers up: {', '.join(t.label for t in targets)}; logs in {work}", flush=True)
        measure(targets, bodies, args)
    finally:
        for proc in procs:
            stop_server(proc)
        shutil.rmtree(work / "model", ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
