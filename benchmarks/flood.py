"""A request flood from its own process, cheap enough on the client side to reach ~1,000 requests/s in Python:
raw HTTP/1.1 on keep-alive connections, each request written whole and its answer read by Content-Length.

    python benchmarks/flood.py 127.0.0.1 8000 embed 800 20      # kind, requests/s, seconds; prints JSON

Kinds: ``embed`` (POST /v1/embeddings of 16-64 STS sentences: under a flood, mostly 429s), ``invalid``
(a body the route answers 400) and ``health`` (GET /health). The rate is spread over the connections;
a connection whose answer is late sends its next request when the answer arrives. Prints one JSON line:
status counts, the latency percentiles of each status, and the sentences of the 200s.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import defaultdict

import numpy as np

CONNECTIONS = 64


def requests_for(kind: str, host: str, count: int = 256) -> list[tuple[bytes, int]]:
    """Whole HTTP requests, each with the number of sentences it carries."""
    if kind == "health":
        return [(f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(), 0)]
    if kind == "invalid":
        bodies = [(json.dumps({"input": [1.5, {"x": 1}], "model": "all-MiniLM-L6-v2"}).encode(), 0)]
    else:
        from serve_load import sts_sentences

        sentences, rng = sts_sentences(), random.Random(0)
        picks = [rng.sample(sentences, rng.randint(16, 64)) for _ in range(count)]
        bodies = [(json.dumps({"input": p, "encoding_format": "base64"}).encode(), len(p)) for p in picks]
    head = "POST /v1/embeddings HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n"
    return [(head.format(host, len(body)).encode() + body, n) for body, n in bodies]


async def answer(reader: asyncio.StreamReader) -> str:
    """Read one response; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0)
    await reader.readexactly(length)
    return lines[0].split(" ")[1]


async def flood(host: str, port: int, kind: str, rate: float, seconds: float) -> dict:
    requests = requests_for(kind, host)
    latencies: dict[str, list[float]] = defaultdict(list)
    served = 0
    start = time.perf_counter()
    stop = start + seconds

    async def connection(k: int) -> None:
        nonlocal served
        n = k
        while time.perf_counter() < stop:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                latencies["connect_error"].append(0.0)
                await asyncio.sleep(0.05)
                continue
            try:
                while time.perf_counter() < stop:
                    await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
                    data, sentences = requests[n % len(requests)]
                    n += CONNECTIONS
                    sent = time.perf_counter()
                    writer.write(data)
                    status = await answer(reader)
                    latencies[status].append(time.perf_counter() - sent)
                    served += sentences if status == "200" else 0
            except (OSError, asyncio.IncompleteReadError):
                latencies["closed"].append(0.0)
            finally:
                writer.close()

    await asyncio.gather(*(connection(k) for k in range(CONNECTIONS)))
    elapsed = time.perf_counter() - start
    summary = {
        s: {"count": len(t), "p50_ms": float(np.percentile(t, 50) * 1e3), "p99_ms": float(np.percentile(t, 99) * 1e3)}
        for s, t in latencies.items()
    }
    return {"kind": kind, "seconds": elapsed, "statuses": summary, "sentences_200": served}


if __name__ == "__main__":
    host, port, kind, rate, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
    print(json.dumps(asyncio.run(flood(host, port, kind, rate, seconds))))
