"""Clients that hold connections without sending requests, in a process of their own (serve_overload.py
--slow-clients): slow-header senders trickle a request at one byte a second, idle keep-alives send one
GET /health and then sit on the connection, renewing it with another now and then. Both reconnect
a second after the server closes them, as an attacker would. With ``addresses`` > 1 they come from
127.0.0.2, 127.0.0.3, ... (Linux routes all of 127/8 to loopback), as if from several machines."""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import time
from collections import Counter
from typing import Any

SLOW_REQUEST = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100_000
HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
Local = tuple[str, int] | None  # a connection's local address (None: the kernel picks 127.0.0.1)
RENEW_SECONDS = 10.0  # an idle keep-alive sends another request this often (uvicorn's keep-alive: 75 s)


def answer(data: bytes) -> str:
    """How the server ended a connection: the status it answered, or 'closed' without one."""
    return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed"


async def read_response(reader: asyncio.StreamReader) -> str:
    """The status of one whole response (its head, then Content-Length bytes), or 'closed'."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return "closed"
    fields = dict(line.lower().split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
    await reader.readexactly(int(fields.get(b"content-length", b"0")))
    return answer(head)


async def connect(
    host: str, port: int, source: Local, stats: Counter[str], who: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A new connection from ``source``, counted under ``who``; None (after a second) when refused."""
    try:
        opened = await asyncio.open_connection(host, port, local_addr=source)
    except OSError:
        stats[f"{who}: connect failed"] += 1
        await asyncio.sleep(1)
        return None
    stats[f"{who}: opened"] += 1
    return opened


async def slow_header(host: str, port: int, source: Local, stop: asyncio.Event, stats: Counter[str]) -> None:
    while not stop.is_set():
        opened = await connect(host, port, source, stats, "slow")
        if opened is None:
            continue
        reader, writer = opened
        sent = 0
        try:
            while not stop.is_set():
                writer.write(SLOW_REQUEST[sent : sent + 1])
                sent += 1
                try:
                    data = await asyncio.wait_for(reader.read(4096), 1.0)
                except asyncio.TimeoutError:
                    continue  # still open: the next byte
                stats[f"slow: {answer(data)} after {min(sent, 99) // 10 * 10}+ s"] += 1
                break
        except OSError:
            stats["slow: reset"] += 1
        finally:
            writer.close()
        await asyncio.sleep(1)


async def idle_keep_alive(host: str, port: int, source: Local, stop: asyncio.Event, stats: Counter[str]) -> None:
    while not stop.is_set():
        opened = await connect(host, port, source, stats, "idle")
        if opened is None:
            continue
        reader, writer = opened
        try:
            while not stop.is_set():
                writer.write(HEALTH)
                status = await read_response(reader)  # the answer to this GET /health
                if status != "200":
                    stats[f"idle: {status}"] += 1
                    break
                try:
                    data = await asyncio.wait_for(reader.read(4096), RENEW_SECONDS)
                except asyncio.TimeoutError:
                    continue  # renew: another request keeps the connection alive
                stats[f"idle: {answer(data)} while idle"] += 1
                break
        except (OSError, asyncio.IncompleteReadError):
            stats["idle: reset"] += 1
        finally:
            writer.close()
        await asyncio.sleep(1)


def source(n: int, addresses: int) -> Local:
    """The n-th client's local address (None: the kernel's choice, 127.0.0.1 on loopback)."""
    return None if addresses <= 1 else (f"127.0.0.{2 + n % addresses}", 0)


async def hold(host: str, port: int, slow: int, idle: int, addresses: int, ready: Any, stop: Any) -> Counter[str]:
    stats: Counter[str] = Counter()
    stopped = asyncio.Event()
    tasks = [
        asyncio.create_task(idle_keep_alive(host, port, source(n, addresses), stopped, stats)) for n in range(idle)
    ]
    await asyncio.sleep(2)  # the keep-alives first, as if they were clients before the slow ones came
    tasks += [
        asyncio.create_task(slow_header(host, port, source(n, addresses), stopped, stats)) for n in range(slow)
    ]
    await asyncio.sleep(3)
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.2)
    stopped.set()
    await asyncio.wait(tasks, timeout=5)
    for task in tasks:
        task.cancel()
    return stats


def run(host: str, port: int, slow: int, idle: int, addresses: int, ready: Any, stop: Any, results: Any) -> None:
    """The process's target: hold the connections until ``stop`` is set, then report what happened."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # ~1,500 sockets and their reconnects
    results.put(dict(asyncio.run(hold(host, port, slow, idle, addresses, ready, stop))))


def start(
    host: str, port: int, slow: int, idle: int, addresses: int = 1
) -> tuple[multiprocessing.Process, Any, Any, Any]:
    """Start the slow clients; returns the process, its ready and stop events, and its result queue."""
    context = multiprocessing.get_context("spawn")
    ready, stop, results = context.Event(), context.Event(), context.Queue()
    process = context.Process(target=run, args=(host, port, slow, idle, addresses, ready, stop, results), daemon=True)
    process.start()
    return process, ready, stop, results


def stop_and_report(process: multiprocessing.Process, stop: Any, results: Any) -> dict[str, int]:
    stop.set()
    try:
        stats: dict[str, int] = results.get(timeout=60)
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    return stats


if __name__ == "__main__":  # pragma: no cover - a quick manual check: python slow_clients.py PORT
    import sys

    proc, ready_event, stop_event, queue = start("127.0.0.1", int(sys.argv[1]), 10, 10)
    ready_event.wait(60)
    time.sleep(5)
    print(stop_and_report(proc, stop_event, queue))
