"""Batched serving vs offline encoding, measured in one run on the same sentences.

    python benchmarks/serve_throughput.py                  # 32 clients, 400 requests of 1-4 STS sentences
    python benchmarks/serve_throughput.py --requests 200 --rounds 3

The same requests go (a) through `sentemb serve` on loopback from 32 concurrent clients and
(b) as one offline ``Encoder.encode`` call in this process. Phases alternate (offline, server,
offline, server, ...) so that a busy machine slows both alike; the ratio of each server phase to the
mean of the offline phases around it is printed, with the median over rounds. The issue asks for >= 0.80.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from serve_load import requests_of, start_server, stop_server, sts_sentences


async def serve_all(url: str, batches: list[list[str]], clients: int) -> tuple[float, list[np.ndarray | None]]:
    """Send every request once from ``clients`` concurrent clients; seconds taken and the vectors."""
    results: list[np.ndarray | None] = [None] * len(batches)
    next_index = iter(range(len(batches)))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            for i in next_index:
                body = {"input": batches[i], "model": "all-MiniLM-L6-v2", "encoding_format": "base64"}
                response = await client.post("/v1/embeddings", json=body)
                response.raise_for_status()
                data = response.json()["data"]
                results[i] = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data])

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(clients))), 1800)
        return time.perf_counter() - started, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=400, help="requests of 1-4 sentences per server phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--server-arg", action="append", default=[], help="extra `sentemb serve` option (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both sides (OMP_NUM_THREADS)")
    args = parser.parse_args()
    if args.threads:  # before torch is imported here and in the server process
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    import sentemb

    batches = requests_of(sts_sentences(), args.requests, seed=1)
    flat = [text for batch in batches for text in batch]
    encoder = sentemb.load(device="cpu", show_progress=False)
    encoder.encode(flat[:64])  # warm-up

    def offline() -> tuple[float, np.ndarray]:
        started = time.perf_counter()
        vectors = encoder.encode(flat)
        return time.perf_counter() - started, vectors

    proc, url = start_server(args.server_arg, Path(tempfile.gettempdir()) / "sentemb-serve_throughput.server.log")
    try:
        asyncio.run(serve_all(url, batches[:64], args.clients))  # warm-up
        offline_s = [offline()[0]]
        server_s: list[float] = []
        served: list[np.ndarray | None] = []
        for _ in range(args.rounds):
            seconds, served = asyncio.run(serve_all(url, batches, args.clients))
            server_s.append(seconds)
            seconds, reference = offline()
            offline_s.append(seconds)
    finally:
        stop_server(proc)

    n = len(flat)
    got = np.concatenate([v for v in served if v is not None])
    max_diff = float(np.abs(got - reference).max())
    # served rate / offline rate, the offline rate being the mean of the phases before and after
    ratios = [(offline_s[i] + offline_s[i + 1]) / (2 * server_s[i]) for i in range(args.rounds)]
    print(
        f"{args.requests} requests of 1-4 STS sentences ({n} sentences), {args.clients} clients, "
        f"{args.rounds} rounds; torch threads {torch.get_num_threads()}"
    )
    print("offline sentences/s  " + "  ".join(f"{n / s:.1f}" for s in offline_s))
    print("served  sentences/s  " + "  ".join(f"{n / s:.1f}" for s in server_s))
    print("ratio served/offline " + "  ".join(f"{r:.2f}" for r in ratios))
    print(f"median ratio         {statistics.median(ratios):.2f}  (target >= 0.80)")
    print(f"max |served - offline| = {max_diff:.2e}")
    sys.exit(0 if max_diff < 1e-4 else 1)


if __name__ == "__main__":
    main()
