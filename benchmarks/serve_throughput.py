"""Batched serving vs offline encoding, measured in one run on the same sentences.

    python benchmarks/serve_throughput.py                  # 32 clients, 400 requests of 1-4 STS sentences
    python benchmarks/serve_throughput.py --requests 200 --rounds 3

The same requests go (a) through `sentemb serve` on loopback from 32 concurrent clients and
(b) as one offline ``Encoder.encode`` call in this process. Phases alternate (offline, server,
offline, server, ...) so that a busy machine slows both alike; the ratio of each server phase to the
mean of the offline phases around it is printed, with the median over rounds. The issue asks for >= 0.80.

The clients run in this process and share the machine's cores with the server. Two clients are
measured (``--client both``, the default, alternates them): "lean", one keep-alive HTTP/1.1
connection per client on raw asyncio streams, which costs little CPU and so measures the server;
and "httpx", httpx.AsyncClient, a realistic but CPU-heavy Python client. Both check every served
vector against the offline ones. Both processes use the same torch thread count (``--threads``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
from machine import cpu_line
from serve_load import requests_of, start_server, stop_server, sts_sentences


def _body(texts: list[str]) -> bytes:
    return json.dumps({"input": texts, "model": "all-MiniLM-L6-v2", "encoding_format": "base64"}).encode()


def _vectors(payload: bytes) -> np.ndarray:
    data = json.loads(payload)["data"]
    return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data])


async def serve_all_httpx(url: str, batches: list[list[str]], clients: int) -> tuple[float, list[np.ndarray | None]]:
    """Send every request once from ``clients`` concurrent httpx clients; seconds taken and the vectors."""
    results: list[np.ndarray | None] = [None] * len(batches)
    next_index = iter(range(len(batches)))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            for i in next_index:
                response = await client.post("/v1/embeddings", content=_body(batches[i]), headers=headers)
                response.raise_for_status()
                results[i] = _vectors(response.content)

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(clients))), 1800)
        return time.perf_counter() - started, results


class LeanConnection:
    """One keep-alive HTTP/1.1 connection on raw asyncio streams: POST a JSON body, read a
    Content-Length response. Far less client CPU per request than httpx, which shares the cores."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode("ascii") + body)
        status_line, _, header_block = (await self.reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = None
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise RuntimeError("the lean client reads Content-Length responses only")
        if length is None:
            raise RuntimeError("response without Content-Length")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


async def serve_all_lean(url: str, batches: list[list[str]], clients: int) -> tuple[float, list[np.ndarray | None]]:
    """Like :func:`serve_all_httpx`, with one lean keep-alive connection per client."""
    results: list[np.ndarray | None] = [None] * len(batches)
    next_index = iter(range(len(batches)))
    parsed = urlparse(url)
    connections = [LeanConnection(parsed.hostname or "127.0.0.1", parsed.port or 80) for _ in range(clients)]

    async def worker(connection: LeanConnection) -> None:
        for i in next_index:
            status, payload = await connection.post("/v1/embeddings", _body(batches[i]))
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {payload[:200]!r}")
            results[i] = _vectors(payload)

    try:
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker(c) for c in connections)), 1800)
        return time.perf_counter() - started, results
    finally:
        for connection in connections:
            await connection.close()


CLIENTS = {"lean": serve_all_lean, "httpx": serve_all_httpx}


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=400, help="requests of 1-4 sentences per server phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--client",
        choices=["lean", "httpx", "both"],
        default="both",
        help="HTTP client of the served phases (both: alternate them, a ratio for each)",
    )
    parser.add_argument("--server-arg", action="append", default=[], help="extra `sentemb serve` option (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both sides (OMP_NUM_THREADS)")
    parser.add_argument("--backend", default="torch", help="backend of both sides: torch, onnx or openvino [torch]")
    return parser.parse_args()


def main() -> None:
    args = _args()
    if args.threads:  # before torch is imported here and in the server process
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    import sentemb

    kinds = ["lean", "httpx"] if args.client == "both" else [args.client]
    batches = requests_of(sts_sentences(), args.requests, seed=1)
    flat = [text for batch in batches for text in batch]
    encoder = sentemb.load(device="cpu", backend=args.backend, show_progress=False)
    encoder.encode(flat[:64])  # warm-up

    def offline() -> tuple[float, np.ndarray]:
        started = time.perf_counter()
        vectors = encoder.encode(flat)
        return time.perf_counter() - started, vectors

    server_args = ["--backend", args.backend, *args.server_arg]
    proc, url = start_server(server_args, Path(tempfile.gettempdir()) / "sentemb-serve_throughput.server.log")
    phases: list[tuple[str, float]] = []  # offline and served phases, alternating: O S O S ... O
    max_diff = 0.0
    try:
        for kind in kinds:
            asyncio.run(CLIENTS[kind](url, batches[:64], args.clients))  # warm-up
        seconds, reference = offline()
        phases.append(("offline", seconds))
        for _ in range(args.rounds):
            for kind in kinds:
                seconds, served = asyncio.run(CLIENTS[kind](url, batches, args.clients))
                phases.append((kind, seconds))
                got = np.concatenate([v for v in served if v is not None])
                max_diff = max(max_diff, float(np.abs(got - reference).max()))
                seconds, reference = offline()
                phases.append(("offline", seconds))
    finally:
        stop_server(proc)

    print(cpu_line())
    _report(phases, kinds, len(flat), (
        f"{args.requests} requests of 1-4 STS sentences ({len(flat)} sentences), {args.clients} clients, "
        f"{args.rounds} rounds; torch threads {torch.get_num_threads()} (both processes); offline encoder "
        f"forward_tokens {encoder.config.forward_tokens}, server options {server_args}"
    ))
    print(f"max |served - offline| = {max_diff:.2e}")
    sys.exit(0 if max_diff < 1e-4 else 1)


def _report(phases: list[tuple[str, float]], kinds: list[str], n: int, title: str) -> None:
    """Offline and served rates, and each served phase's ratio to the offline phases around it."""
    offline_s = [s for name, s in phases if name == "offline"]
    print(title)
    print("offline sentences/s  " + "  ".join(f"{n / s:.1f}" for s in offline_s))
    for kind in kinds:
        # served rate / offline rate, the offline rate being the mean of the phases just before and after
        served_s = [s for name, s in phases if name == kind]
        at = [i for i, (name, _) in enumerate(phases) if name == kind]
        ratios = [(phases[i - 1][1] + phases[i + 1][1]) / (2 * phases[i][1]) for i in at]
        note = " (raw asyncio keep-alive HTTP/1.1 client)" if kind == "lean" else " (httpx.AsyncClient)"
        print(f"[{kind} client{note}]")
        print("  served  sentences/s  " + "  ".join(f"{n / s:.1f}" for s in served_s))
        print("  ratio served/offline " + "  ".join(f"{r:.2f}" for r in ratios))
        print(f"  median ratio         {statistics.median(ratios):.2f}  (target >= 0.80)")


if __name__ == "__main__":
    main()
