"""Bounded load test of `sentemb serve` on loopback: N concurrent clients for D seconds, then stop.

    python benchmarks/serve_load.py                      # 64 clients, 30 s, starts its own server
    python benchmarks/serve_load.py --clients 8 --duration 5

Starts the server as a subprocess on a free 127.0.0.1 port (or uses --url, loopback only), sends
requests of 1-4 STS sentences, and reports requests/s, p50/p99 latency, status counts (5xx must be 0)
and the growth of the server process's RSS. Every request has a timeout, the run has a deadline,
and the server it started is stopped with SIGTERM at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import psutil
from machine import cpu_line

ROOT = Path(__file__).resolve().parents[1]
STS = ROOT / "data" / "stsb" / "sts-train.csv"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def sts_sentences(path: Path = STS) -> list[str]:
    import sentemb

    data = sentemb.read_sts(path)
    return list(dict.fromkeys([*data.sentences1, *data.sentences2]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(extra: list[str] | None = None, log_path: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`sentemb serve` on a free loopback port; returns the process and its URL once /ready says 200."""
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "import sys; from sentemb.cli import main; sys.exit(main())",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--log-level",
        "warning",
        "--drain-seconds",
        "0",
        *(extra or []),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SENTEMB_API_KEY", None)
    log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log_path or 'its output'}")
        try:
            if httpx.get(f"{url}/ready", timeout=10).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError("server did not become ready in 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def requests_of(sentences: list[str], count: int, seed: int = 0) -> list[list[str]]:
    """``count`` requests of 1-4 sentences each, drawn with a fixed seed."""
    rng = random.Random(seed)
    return [rng.sample(sentences, rng.randint(1, 4)) for _ in range(count)]


async def run_load(url: str, batches: list[list[str]], clients: int, duration: float, timeout: float) -> dict:
    """Each client sends the next request as soon as its previous one is answered, until ``duration``."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    inputs = 0
    stop_at = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:

        async def worker(offset: int) -> None:
            nonlocal inputs
            i = offset
            while time.perf_counter() < stop_at:
                texts = batches[i % len(batches)]
                i += clients
                started = time.perf_counter()
                try:
                    response = await client.post(
                        "/v1/embeddings",
                        json={"input": texts, "model": "all-MiniLM-L6-v2", "encoding_format": "base64"},
                    )
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                    continue
                statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                    inputs += len(texts)
                elif response.status_code == 429:
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker(k) for k in range(clients))), duration + timeout + 5)
        elapsed = time.perf_counter() - started
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    return {
        "elapsed_s": elapsed,
        "requests_ok": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "inputs_per_s": inputs / elapsed,
        "p50_ms": float(np.percentile(lat, 50) * 1000),
        "p99_ms": float(np.percentile(lat, 99) * 1000),
        "status": dict(statuses),
        "errors_5xx": sum(n for s, n in statuses.items() if s.isdigit() and s.startswith("5")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (at most 300)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    parser.add_argument("--url", default=None, help="an already running server on loopback (default: start one)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `sentemb serve` option (repeatable)")
    args = parser.parse_args()
    duration = min(args.duration, 300.0)
    batches = requests_of(sts_sentences(), 4096)

    proc = None
    if args.url:
        if urlparse(args.url).hostname not in LOOPBACK:
            parser.error("--url must point at a loopback address")
        url = args.url
    else:
        proc, url = start_server(args.server_arg, Path(tempfile.gettempdir()) / "sentemb-serve_load.server.log")
    try:
        server = psutil.Process(proc.pid) if proc else None
        # a short warm-up so allocator pools exist before the first RSS reading
        asyncio.run(run_load(url, batches, min(args.clients, 8), 2.0, args.timeout))
        rss_before = server.memory_info().rss if server else None
        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def sample() -> None:  # RSS once a second: growth in the last two thirds tells a leak from warm-up
            start = time.perf_counter()
            while server is not None and not done.wait(1.0):
                samples.append((time.perf_counter() - start, server.memory_info().rss))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = asyncio.run(run_load(url, batches, args.clients, duration, args.timeout))
        done.set()
        sampler.join()
        rss_after = server.memory_info().rss if server else None
    finally:
        if proc is not None:
            stop_server(proc)

    print(cpu_line())
    print(f"clients={args.clients} duration={duration:.0f}s url={url}")
    print(f"requests/s      {result['requests_per_s']:.1f}  ({result['inputs_per_s']:.1f} sentences/s)")
    print(f"latency p50/p99 {result['p50_ms']:.0f} ms / {result['p99_ms']:.0f} ms")
    print(f"status counts   {result['status']}")
    print(f"5xx             {result['errors_5xx']}")
    if rss_before is not None and rss_after is not None:
        growth = (rss_after - rss_before) / 2**20
        print(f"server RSS      {rss_before / 2**20:.0f} MiB -> {rss_after / 2**20:.0f} MiB (growth {growth:+.1f} MiB)")
        later = [rss for t, rss in samples if t >= duration / 3]
        if later:
            tail = (rss_after - later[0]) / 2**20
            print(f"RSS growth in the last two thirds of the run {tail:+.1f} MiB (peak {max(later) / 2**20:.0f} MiB)")
    if proc is not None:
        print(f"server exit     {proc.returncode} (after SIGTERM)")
    sys.exit(1 if result["errors_5xx"] else 0)


if __name__ == "__main__":
    main()
