"""Backpressure, merging, disconnects and draining over real HTTP, with a fake encoder whose forward
pass waits on a gate, so each test decides exactly when the model is busy."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")

from sentemb.config import EncoderConfig
from sentemb.encoder import EncodeResult
from sentemb.server import ServerSettings, build_server, serve_in_background
from sentemb.tokenize import TextInfo


def vector(text: str) -> list[float]:
    return [float(len(text)), float(sum(map(ord, text)) % 997), 1.0]


class GatedEncoder:
    """Looks like an Encoder to the server; ``encode_with_info`` blocks while the gate is closed."""

    def __init__(self) -> None:
        self.config = EncoderConfig(model="fake/gated")
        self.dim = 3
        self.max_length = 128
        self.device = "cpu"
        self.parallel = 1  # batches the backend computes at once
        self.gate = threading.Event()
        self.gate.set()
        self.busy = threading.Event()
        self.calls: list[list[str]] = []

    def encode_with_info(self, texts, show_progress=None):
        texts = list(texts)
        self.calls.append(texts)
        self.busy.set()
        if not self.gate.wait(timeout=20):
            raise RuntimeError("test gate never opened")
        return EncodeResult(np.array([vector(t) for t in texts], dtype=np.float32), [TextInfo(3, False) for t in texts])

    def encode(self, texts, show_progress=None):
        return self.encode_with_info(texts).embeddings

    def hold(self) -> None:
        self.gate.clear()
        self.busy.clear()


def queue_depth(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("sentemb_queue_inputs "):
            return float(line.split()[1])
    raise AssertionError("sentemb_queue_inputs missing from /metrics")


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def post_in_thread(url: str, texts: list[str], results: dict, key: str, timeout: float = 30) -> threading.Thread:
    def target():
        try:
            results[key] = httpx.post(f"{url}/v1/embeddings", json={"input": texts}, timeout=timeout)
        except httpx.HTTPError as exc:
            results[key] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


SETTINGS = ServerSettings(port=0, max_inputs=4, queue_size=4, max_wait_ms=2, drain_seconds=0)


@pytest.fixture()
def fake():
    encoder = GatedEncoder()
    yield encoder
    encoder.gate.set()


def test_concurrent_requests_merge_into_micro_batches(fake):
    settings = ServerSettings(port=0, max_inputs=16, queue_size=64, max_wait_ms=2, drain_seconds=0)
    with serve_in_background(fake, settings) as url, httpx.Client(base_url=url) as client:
        wait_for(lambda: queue_depth(client) == 0 and bool(fake.calls))  # warm-up done
        fake.hold()
        results: dict = {}
        threads = [post_in_thread(url, ["blocker"], results, "blocker")]
        assert fake.busy.wait(5)
        jobs = {f"r{i}": [f"text {i} {j}" for j in range(1 + i % 4)] for i in range(12)}
        threads += [post_in_thread(url, texts, results, key) for key, texts in jobs.items()]
        wait_for(lambda: queue_depth(client) == sum(map(len, jobs.values())))
        calls_before = len(fake.calls)
        fake.gate.set()
        for thread in threads:
            thread.join(10)
        assert len(fake.calls) - calls_before == 1, "all queued requests should share one micro-batch"
        for key, texts in jobs.items():
            body = results[key].json()
            assert [d["index"] for d in body["data"]] == list(range(len(texts)))
            np.testing.assert_allclose([d["embedding"] for d in body["data"]], [vector(t) for t in texts])
        metrics = client.get("/metrics").text
        assert "sentemb_batch_requests_bucket" in metrics


def test_full_queue_answers_429_at_once_with_retry_after(fake):
    with serve_in_background(fake, SETTINGS) as url, httpx.Client(base_url=url) as client:
        wait_for(lambda: bool(fake.calls))
        fake.hold()
        results: dict = {}
        threads = [post_in_thread(url, ["in the model"], results, "running")]
        assert fake.busy.wait(5)
        threads.append(post_in_thread(url, ["q1", "q2", "q3", "q4"], results, "queued"))
        wait_for(lambda: queue_depth(client) == 4)
        started = time.perf_counter()
        refused = client.post("/v1/embeddings", json={"input": "one more"})
        elapsed = time.perf_counter() - started
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert elapsed < 1.0
        fake.gate.set()
        for thread in threads:
            thread.join(10)
        assert results["running"].status_code == results["queued"].status_code == 200
        assert 'sentemb_rejected_requests_total{reason="queue_full"} 1.0' in client.get("/metrics").text


def test_disconnected_client_has_its_queued_work_dropped(fake):
    with serve_in_background(fake, SETTINGS) as url, httpx.Client(base_url=url) as client:
        wait_for(lambda: bool(fake.calls))
        fake.hold()
        results: dict = {}
        running = post_in_thread(url, ["in the model"], results, "running")
        assert fake.busy.wait(5)
        gone = post_in_thread(url, ["abandoned text"], results, "gone", timeout=0.5)
        gone.join(5)
        assert isinstance(results["gone"], httpx.TimeoutException)  # the client gave up and closed
        wait_for(lambda: queue_depth(client) == 0)  # its input left the queue without reaching the model
        fake.gate.set()
        running.join(10)
        assert results["running"].status_code == 200
        assert client.post("/v1/embeddings", json={"input": "after"}).status_code == 200
        assert not any("abandoned text" in call for call in fake.calls)
        assert 'sentemb_rejected_requests_total{reason="client_gone"} 1.0' in client.get("/metrics").text


def test_shutdown_waits_for_in_flight_requests(fake):
    """What SIGTERM does after the drain period: stop listening, finish in-flight work, then stop."""
    server = build_server(fake, SETTINGS, log_level="warning")
    assert server.config.timeout_keep_alive == SETTINGS.keep_alive_seconds
    lifecycle = server.config.app.state.lifecycle
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        wait_for(lambda: server.started and bool(fake.calls))
        fake.hold()
        results: dict = {}
        in_flight = post_in_thread(url, ["finish me", "and me"], results, "in_flight")
        assert fake.busy.wait(5)
        server.should_exit = True
        time.sleep(0.3)
        assert thread.is_alive(), "the server must wait for the in-flight request"
        fake.gate.set()
        in_flight.join(10)
        thread.join(10)
        assert not thread.is_alive()
        assert results["in_flight"].status_code == 200
        assert len(results["in_flight"].json()["data"]) == 2
        assert lifecycle.phase.value == "draining"


def test_closing_batcher_answers_503(fake):
    async def main():
        from sentemb.server import create_app

        app = create_app(fake, SETTINGS)
        async with app.router.lifespan_context(app):
            pass  # startup then shutdown: the batcher is closed now
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/v1/embeddings", json={"input": "late"})
            ready = await client.get("/ready")
        return response, ready

    response, ready = asyncio.run(main())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "shutting_down"
    assert ready.status_code == 503


def test_ready_is_503_until_the_first_forward_pass_finishes(fake):
    fake.hold()  # the warm-up forward pass blocks
    with serve_in_background(fake, SETTINGS) as url, httpx.Client(base_url=url) as client:
        assert fake.busy.wait(5)
        starting = client.get("/ready")
        assert starting.status_code == 503
        assert starting.json()["error"]["code"] == "not_ready"
        assert client.get("/health").status_code == 200  # alive while loading
        fake.gate.set()
        wait_for(lambda: client.get("/ready").status_code == 200)


def test_a_broken_model_is_not_ready_and_fails_requests_in_openai_shape(fake):
    def broken(texts, show_progress=None):
        raise RuntimeError("the model broke")

    fake.encode_with_info = broken
    with serve_in_background(fake, SETTINGS) as url, httpx.Client(base_url=url) as client:
        assert client.get("/ready").status_code == 503
        response = client.post("/v1/embeddings", json={"input": "x"})
        assert response.status_code == 500  # the server's fault, not the client's
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "server_error"
        assert "broke" not in error["message"]  # internal messages stay internal


def test_a_poisoned_request_fails_alone_and_its_micro_batch_neighbours_get_their_vectors(fake):
    """One bad request shares a micro-batch with good ones: only it fails (isolation), and a text that
    is not valid Unicode is refused with a 400 before it is queued at all."""
    real = fake.encode_with_info

    def poisoned(texts, show_progress=None):
        result = real(texts, show_progress)
        if any("POISON" in t for t in texts):  # the model fails on the whole merged call
            raise RuntimeError("the tokenizer blew up")
        return result

    fake.encode_with_info = poisoned
    settings = ServerSettings(port=0, max_inputs=16, queue_size=64, max_wait_ms=2, drain_seconds=0)
    with serve_in_background(fake, settings) as url, httpx.Client(base_url=url) as client:
        wait_for(lambda: queue_depth(client) == 0 and bool(fake.calls))  # warm-up done
        fake.hold()
        results: dict = {}
        threads = [post_in_thread(url, ["blocker"], results, "blocker")]
        assert fake.busy.wait(5)
        good = {f"good{i}": [f"text {i} {j}" for j in range(1 + i % 3)] for i in range(8)}
        bad = {f"bad{i}": ["fine", f"POISON {i}"] for i in range(3)}
        jobs = {**good, **bad}
        threads += [post_in_thread(url, texts, results, key) for key, texts in jobs.items()]
        surrogate = client.post(
            "/v1/embeddings",
            content=b'{"input": ["ok", "\\ud800 lone"]}',
            headers={"Content-Type": "application/json"},
        )
        raw = client.post(
            "/v1/embeddings", content=b'{"input": "\xed\xa0\x80"}', headers={"Content-Type": "application/json"}
        )
        wait_for(lambda: queue_depth(client) == sum(map(len, jobs.values())))
        calls_before = len(fake.calls)
        fake.gate.set()
        for thread in threads:
            thread.join(10)
        assert len(fake.calls) - calls_before == 1 + len(jobs), "one merged call, then each request alone"
        for key, texts in good.items():
            assert results[key].status_code == 200, results[key].text
            got = [d["embedding"] for d in results[key].json()["data"]]
            np.testing.assert_allclose(got, [vector(t) for t in texts])
        for key in bad:
            assert results[key].status_code == 500
            assert results[key].json()["error"]["type"] == "server_error"
    for response, index in ((surrogate, 1), (raw, 0)):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "input" and error["code"] == "invalid_text"
        assert f"input[{index}]" in error["message"] and "Unicode" in error["message"]
    assert not any("\ud800" in t for call in fake.calls for t in call)  # never queued
