"""30 s of overload against `sentemb serve` on loopback, and the latency of small requests beside a large one.

    python benchmarks/serve_overload.py                   # ~75 s in all; starts and stops its own server
    python benchmarks/serve_overload.py --rate 300 --duration 10
    python benchmarks/serve_overload.py --slow-clients    # only the slow-client phase (~45 s)

Phases, each bounded in requests and time:
  1. small alone:    one client, one-sentence requests, 8 s             -> p99 of small requests
  2. big neighbour:  the same, beside a client sending 100-text requests -> p99 of small requests
  3. overload:       open loop at --rate requests/s (--texts 16 64 sentences each), --duration s
                     -> share of 429s answered within 100 ms, p99 of accepted requests, 5xx count
  --flood: a normal client sending 40-sentence requests one after another, alone, then beside a flood
           from another process (benchmarks/flood.py, --flood-rate requests/s for --duration s) of
           16-64-sentence requests (mostly 429s), of invalid requests (400s) and of GET /health
           -> goodput (sentences/s served during the flood, against the same encoder in-process),
           the latency of the accepted requests and of the 429s, the normal client's p50 against its
           quiet p50; --pin-client CPU runs the flood and the normal client on that core
  --slow-clients: 1,000 connections sending headers at one byte a second and 512 idle keep-alives
                  (each renewed every 10 s; all reconnect when closed), from another process, while
                  one client sends one-sentence requests for --duration s -> its share of 200s and p99
Prints the CPU model and ISA flags first and the server's RSS at the start and end of the overload.
The server runs the default model on the CPU with the library's default ServerSettings (port aside).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import psutil
import slow_clients
from machine import cpu_line
from serve_load import free_port, sts_sentences

SERVER = (
    "import sys, sentemb; from sentemb.server import ServerSettings, serve; "
    "serve(sentemb.load(device='cpu', backend=sys.argv[2]), ServerSettings(port=int(sys.argv[1]), drain_seconds=0, "
    "access_log=False), "
    "log_level='warning')"
)


def start_server(backend: str = "auto") -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}  # as `sentemb serve` sets it
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), backend], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/ready", timeout=10).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError("the server did not become ready in 120 s")


async def post(client: httpx.AsyncClient, texts: list[str], log: list[tuple[str, float]]) -> float:
    """Send one request and log its status and latency; returns the Retry-After of a 429 (else 0)."""
    started = time.perf_counter()
    retry = 0.0
    try:
        response = await client.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"})
        status = str(response.status_code)
        retry = float(response.headers.get("Retry-After", 0)) if response.status_code == 429 else 0.0
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    log.append((status, time.perf_counter() - started))
    return retry


async def small_requests(url: str, sentences: list[str], seconds: float, big: bool) -> list[tuple[str, float]]:
    """One client sending one sentence at a time; optionally a second client sending 100-text requests."""
    log: list[tuple[str, float]] = []
    big_log: list[tuple[str, float]] = []
    stop_at = time.perf_counter() + seconds
    long_texts = [" ".join(sentences[i : i + 12]) for i in range(0, 1200, 12)]  # ~256 tokens each

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def small() -> None:
            i = 0
            while time.perf_counter() < stop_at:
                await post(client, [sentences[i % len(sentences)]], log)
                i += 1
                await asyncio.sleep(0.05)

        async def large() -> None:
            while time.perf_counter() < stop_at:
                await asyncio.sleep(await post(client, long_texts, big_log))  # a polite client honours 429s

        await asyncio.wait_for(asyncio.gather(small(), *([large()] if big else [])), seconds + 150)
    if big:
        print(f"  (large requests: {dict(Counter(s for s, _ in big_log))})")
    return log


async def overload(url: str, batches: list[list[str]], rate: float, seconds: float) -> list[tuple[str, float]]:
    """Open loop: a request every 1/rate s whatever the answers, at most 1,000 in flight."""
    log: list[tuple[str, float]] = []
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        tasks: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        for n in range(int(rate * seconds)):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= 1000:
                log.append(("client_skipped", 0.0))
                continue
            task = asyncio.create_task(post(client, batches[n % len(batches)], log))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=90)
    return log


def requests_of(sentences: list[str], count: int, low: int, high: int) -> list[list[str]]:
    rng = random.Random(0)
    return [rng.sample(sentences, rng.randint(low, high)) for _ in range(count)]


def p99_ms(log: list[tuple[str, float]], status: str = "200", q: float = 99) -> float:
    times = [t for s, t in log if s == status]
    return float(np.percentile(times, q) * 1000) if times else float("nan")


def server_rate(url: str) -> str:
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("sentemb_estimated_tokens_per_second "):
            return f"{float(line.split()[1]):.0f}"
    return "?"


def slow_clients_phase(
    url: str, sentences: list[str], seconds: float, slow: int, idle: int, addresses: int = 1
) -> bool:
    """One normal client beside connections that hold slots without sending requests; True if it met
    the goal (>= 99% of its requests answered 200, p99 under 1 s)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    process, ready, stop, results = slow_clients.start(host, int(port), slow, idle, addresses)
    try:
        if not ready.wait(120):
            raise RuntimeError("the slow clients did not start in 120 s")
        log = asyncio.run(small_requests(url, sentences, seconds, big=False))
    finally:
        stats = slow_clients.stop_and_report(process, stop, results)
    statuses = Counter(s for s, _ in log)
    share = statuses["200"] / len(log) if log else 0.0
    p99 = p99_ms(log)
    where = "127.0.0.1, as the normal client" if addresses <= 1 else f"{addresses} addresses"
    print(f"slow clients: {slow} slow-header + {idle} idle keep-alive connections from {where}, reconnecting")
    print(f"  for {seconds:g} s beside one client sending one-sentence requests from 127.0.0.1")
    print(f"  normal client            {share:.1%} of {len(log)} requests answered 200 {dict(statuses)}")
    print(f"  its latency              p50 {p99_ms(log, q=50):.0f} ms, p99 {p99:.0f} ms")
    print(f"  slow clients saw         {dict(sorted(stats.items()))}")
    return share >= 0.99 and p99 < 1000


async def steady(url: str, texts: list[str], seconds: float) -> list[tuple[str, float]]:
    """One client sending ``texts`` again and again for ``seconds``; its log."""
    log: list[tuple[str, float]] = []
    stop_at = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        while time.perf_counter() < stop_at:
            await asyncio.sleep(await post(client, texts, log))  # a polite client honours 429s
    return log


def flood_phases(url: str, sentences: list[str], rate: float, seconds: float, pin: int | None, backend: str) -> None:
    """The normal client alone, then beside each kind of flood; prints goodput and latencies."""
    from serve_vs_infinity import in_process

    capacity = in_process(random.Random(1).sample(sentences, 2048), backend)[0]["calls_of_32"]
    normal = sentences[:40]
    host, port = url.removeprefix("http://").rsplit(":", 1)
    pinned = ["taskset", "-c", str(pin)] if pin is not None else []
    quiet = asyncio.run(steady(url, normal, seconds / 2))
    print(f"in-process capacity {capacity:.0f} sentences/s; normal client (40 sentences) alone: "
          f"p50 {p99_ms(quiet, q=50):.0f} ms, p99 {p99_ms(quiet):.0f} ms")  # fmt: skip
    for kind in ("embed", "invalid", "health"):
        command = [*pinned, sys.executable, str(Path(__file__).with_name("flood.py")), host, port, kind, str(rate),
                   str(seconds)]  # fmt: skip
        flooder = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        log = asyncio.run(steady(url, normal, seconds))
        result = json.loads(flooder.communicate(timeout=seconds + 120)[0])
        statuses = result["statuses"]
        sent = sum(v["count"] for v in statuses.values())
        served = result["sentences_200"] + 40 * sum(s == "200" for s, _ in log)
        shown = ", ".join(f"{s}: {v['count']} (p50 {v['p50_ms']:.0f} / p99 {v['p99_ms']:.0f} ms)"
                          for s, v in sorted(statuses.items()))  # fmt: skip
        print(f"{kind} flood: {sent / result['seconds']:.0f} requests/s sent; {shown}")
        print(f"  goodput {served / result['seconds']:.0f} sentences/s ({served / result['seconds'] / capacity:.0%} "
              f"of in-process); normal client p50 {p99_ms(log, q=50):.0f} ms "
              f"({p99_ms(log, q=50) / p99_ms(quiet, q=50):.1f}x alone), p99 {p99_ms(log):.0f} ms, "
              f"{dict(Counter(s for s, _ in log))}")  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20.0, help="overload requests per second")
    parser.add_argument("--texts", type=int, nargs=2, default=(16, 64), help="sentences per overload request")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of overload (at most 120)")
    parser.add_argument("--slow-clients", action="store_true", help="run only the slow-client phase")
    parser.add_argument("--flood", action="store_true", help="run only the flood phases")
    parser.add_argument("--backend", default="auto", help="the served model's backend [auto, as sentemb serve]")
    parser.add_argument("--flood-rate", type=float, default=800.0, help="flood requests per second (--flood)")
    parser.add_argument("--pin-client", type=int, default=None, metavar="CPU", help="the flood's core (--flood)")
    parser.add_argument("--slow", type=int, default=1000, help="slow-header connections (--slow-clients)")
    parser.add_argument("--idle", type=int, default=512, help="idle keep-alive connections (--slow-clients)")
    parser.add_argument(
        "--addresses", type=int, default=1, help="slow clients' source addresses, 127.0.0.2 on (default: 127.0.0.1)"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    print(cpu_line(), flush=True)
    sentences = sts_sentences()
    proc, url = start_server(args.backend)
    if args.flood:
        try:
            flood_phases(url, sentences, args.flood_rate, min(args.duration, 120.0), args.pin_client, args.backend)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        return
    if args.slow_clients:
        try:
            met = slow_clients_phase(url, sentences, min(args.duration, 120.0), args.slow, args.idle, args.addresses)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        sys.exit(0 if met else 1)
    try:
        server = psutil.Process(proc.pid)
        alone = asyncio.run(small_requests(url, sentences, 8.0, big=False))
        beside = asyncio.run(small_requests(url, sentences, 15.0, big=True))
        rss_start = server.memory_info().rss
        rate_start = server_rate(url)
        seconds = min(args.duration, 120.0)
        log = asyncio.run(overload(url, requests_of(sentences, 8192, *args.texts), args.rate, seconds))
        rss_end = server.memory_info().rss
        rate_end = server_rate(url)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    statuses = Counter(s for s, _ in log)
    refusals = [t for s, t in log if s == "429"]
    fast = sum(t <= 0.1 for t in refusals) / len(refusals) if refusals else float("nan")
    print(f"small requests alone:          p99 {p99_ms(alone):.0f} ms ({len(alone)} requests)")
    print(f"small requests beside a large: p99 {p99_ms(beside):.0f} ms ({len(beside)} requests)")
    low, high = args.texts
    print(f"overload: {args.rate:g} requests/s of {low}-{high} sentences for {min(args.duration, 120.0):g} s")
    print(f"  status counts            {dict(statuses)}")
    print(f"  429s within 100 ms       {fast:.1%} of {len(refusals)}")
    print(f"  p99 of accepted requests {p99_ms(log):.0f} ms (p50 {p99_ms(log, q=50):.0f}, p90 {p99_ms(log, q=90):.0f})")
    print(f"  measured rate            {rate_start} -> {rate_end} estimated tokens/s")
    errors = sum(n for s, n in statuses.items() if s.startswith("5"))
    print(f"  5xx                      {errors}")
    print(f"server RSS                 {rss_start / 2**20:.0f} MiB at the start, {rss_end / 2**20:.0f} MiB at the end")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
