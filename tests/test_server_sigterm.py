"""`sentemb serve` as a real process: SIGTERM turns /ready to 503, lets in-flight work finish, then exits;
the log (at debug) never holds a request text."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest

from waiting import read_until, wait_until

pytest.importorskip("fastapi")

import sentemb

CANARY = "okapi-canary-51c2 text that must stay out of logs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def in_flight_requests(url: str, auth: dict[str, str]) -> float:
    for line in httpx.get(f"{url}/metrics", headers=auth, timeout=5).text.splitlines():
        if line.startswith("sentemb_embedding_requests_in_flight "):
            return float(line.split()[1])
    raise AssertionError("sentemb_embedding_requests_in_flight missing from /metrics")


def test_sigterm_drains_then_exits(sts_train_path, default_encoder):
    data = sentemb.read_sts(sts_train_path)
    texts = [f"{a} {b}" for a, b in zip(data.sentences1[:199], data.sentences2[:199], strict=True)] + [CANARY]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SENTEMB_API_KEY": "k"}
    command = [
        sys.executable,
        "-c",
        "import sys; from sentemb.cli import main; sys.exit(main())",
        "serve",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--drain-seconds",
        "4",
        "--log-level",
        "debug",
    ]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    auth = {"Authorization": "Bearer k"}
    try:
        read_until(proc, "is ready")  # the server's log line once its model has warmed up

        assert httpx.get(f"{url}/ready", timeout=5).status_code == 401  # SENTEMB_API_KEY is in force
        result: dict = {}

        def in_flight():
            response = httpx.post(f"{url}/v1/embeddings", json={"input": texts}, headers=auth, timeout=60)
            result["response"] = response

        thread = threading.Thread(target=in_flight, daemon=True)
        thread.start()
        wait_until(lambda: in_flight_requests(url, auth) >= 1, "a request in the server")
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(f"{url}/ready", headers=auth, timeout=5).status_code == 503, "draining")
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # still alive
        thread.join(60)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    response = result["response"]
    assert response.status_code == 200, output[-3000:]
    data = response.json()["data"]  # over 64 rows: rendered off the event loop
    assert len(data) == len(texts)
    got = np.array([d["embedding"] for d in data[-3:]], dtype=np.float32)
    np.testing.assert_allclose(got, default_encoder.encode(texts[-3:]), atol=1e-5)
    # (test_server_backpressure.py proves with a gated model that shutdown waits for in-flight work)
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "draining" in output and "Application shutdown complete" in output
    assert "okapi-canary" not in output
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)
