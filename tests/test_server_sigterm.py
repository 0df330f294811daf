"""`sentemb serve` as a real process: SIGTERM turns /ready to 503, lets in-flight work finish, then exits 0;
the log (at debug) never holds a request text. And in-process, over the gated fake backend: a request still
running when the shutdown timeout ends is answered 503 'shutting_down' in the JSON error shape."""

from __future__ import annotations

import contextlib
import logging
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
from fakes import FakeBackend, fake_encoder
from sentemb.server import ServerSettings, build_server

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
        "--backend",
        "torch",
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
    assert proc.returncode == 0, output[-3000:]  # a drained shutdown is a clean exit, not a death by signal
    assert "draining" in output and "Application shutdown complete" in output
    assert "okapi-canary" not in output
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)


def test_a_request_cut_at_the_shutdown_timeout_gets_a_json_503(caplog, monkeypatch):
    backend = FakeBackend()
    settings = ServerSettings(port=0, drain_seconds=0, shutdown_timeout=1)
    server = build_server(fake_encoder(backend), settings, log_level="warning")
    monkeypatch.setattr(logging.getLogger("uvicorn"), "propagate", True)  # to caplog's handler on the root
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    result: dict = {}
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            wait_until(lambda: server.started)
            wait_until(lambda: httpx.get(f"{url}/ready").status_code == 200, "ready")
            backend.hold()

            def in_flight():
                result["response"] = httpx.post(f"{url}/v1/embeddings", json={"input": ["held"]}, timeout=60)

            client = threading.Thread(target=in_flight, daemon=True)
            client.start()
            assert backend.entered.wait(30)  # the request is in the model, which stays held
            server.handle_exit(signal.SIGTERM, None)  # as the signal would (the thread cannot take signals)
            client.join(60)
        finally:
            backend.release()  # the model thread finishes, so the service can stop
            thread.join(60)
    response = result["response"]
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "shutting_down"
    assert "send it again" in response.json()["error"]["message"]
    assert "timeout graceful shutdown exceeded" in caplog.text  # uvicorn did cut it
    assert "Exception in ASGI application" not in caplog.text
