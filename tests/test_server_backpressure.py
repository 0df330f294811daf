"""Backpressure, merging, disconnects, draining and isolation over real HTTP, with a real Encoder over the
fake backend (tests/fakes.py), whose forward pass waits on a gate, so each test decides exactly when the
model is busy. Nothing here waits on a sleep or asserts a wall-clock bound."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import httpx
import numpy as np
import pytest

from waiting import wait_until

pytest.importorskip("fastapi")

from fakes import FakeBackend, fake_encoder, token_id
from sentemb.server import ServerSettings, build_server, serve_in_background
from sentemb.server.admission import Throughput


def metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} missing from /metrics")


def queue_depth(client: httpx.Client) -> float:
    return metric(client, "sentemb_queue_inputs")


def post_in_thread(url: str, texts: list[str], results: dict, key: str, timeout: float = 60) -> threading.Thread:
    def target():
        try:
            results[key] = httpx.post(f"{url}/v1/embeddings", json={"input": texts}, timeout=timeout)
        except httpx.HTTPError as exc:
            results[key] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


SETTINGS = ServerSettings(port=0, max_inputs=4, queue_size=4, max_wait_ms=2, drain_seconds=0)


@pytest.fixture(scope="module")
def backend():
    return FakeBackend()


@pytest.fixture(scope="module")
def encoder(backend):
    return fake_encoder(backend)


@pytest.fixture()
def fake(backend):
    backend.release()
    backend.fail_on_token = None
    backend.batches.clear()
    yield backend
    backend.release()
    backend.fail_on_token = None


def served_batches(client: httpx.Client) -> float:
    return metric(client, "sentemb_batch_requests_count")


def test_concurrent_requests_merge_into_micro_batches(fake, encoder):
    settings = ServerSettings(port=0, max_inputs=16, queue_size=64, max_wait_ms=2, drain_seconds=0)
    with serve_in_background(encoder, settings) as url, httpx.Client(base_url=url) as client:
        wait_until(lambda: client.get("/ready").status_code == 200)
        fake.hold()
        results: dict = {}
        threads = [post_in_thread(url, ["blocker"], results, "blocker")]
        assert fake.entered.wait(20)
        jobs = {f"r{i}": [f"text {i} {j}" for j in range(1 + i % 4)] for i in range(12)}
        threads += [post_in_thread(url, texts, results, key) for key, texts in jobs.items()]
        wait_until(lambda: queue_depth(client) == sum(map(len, jobs.values())))
        fake.release()
        for thread in threads:
            thread.join(30)
        assert served_batches(client) == 2, "the blocker, then all queued requests in one micro-batch"
        for key, texts in jobs.items():
            body = results[key].json()
            assert [d["index"] for d in body["data"]] == list(range(len(texts)))
            np.testing.assert_allclose([d["embedding"] for d in body["data"]], encoder.encode(texts), rtol=1e-6)


def test_full_queue_answers_429_at_once_with_retry_after(fake, encoder):
    with serve_in_background(encoder, SETTINGS) as url, httpx.Client(base_url=url) as client:
        wait_until(lambda: client.get("/ready").status_code == 200)
        fake.hold()
        results: dict = {}
        threads = [post_in_thread(url, ["in the model"], results, "running")]
        assert fake.entered.wait(20)
        threads.append(post_in_thread(url, ["q1", "q2", "q3", "q4"], results, "queued"))
        wait_until(lambda: queue_depth(client) == 4)
        refused = client.post("/v1/embeddings", json={"input": "one more"})  # answered while the model is held
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert not fake.gate.is_set() and "running" not in results  # so it did not wait for the model
        fake.release()
        for thread in threads:
            thread.join(30)
        assert results["running"].status_code == results["queued"].status_code == 200
        assert 'sentemb_rejected_requests_total{reason="queue_full"} 1.0' in client.get("/metrics").text


@contextlib.contextmanager
def served(encoder, settings: ServerSettings):
    """Like serve_in_background, and also yields the app's EmbeddingService."""
    server = build_server(encoder, settings, log_level="warning")
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        wait_until(lambda: server.started)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}", server.config.app.state.service
        finally:
            server.should_exit = True
            thread.join(30)


def test_work_over_the_latency_budget_is_refused_at_once_with_a_computed_retry_after(fake, encoder):
    settings = ServerSettings(
        port=0, max_inputs=64, queue_size=4096, max_wait_ms=2, drain_seconds=0, max_queue_seconds=1.0
    )
    with served(encoder, settings) as (url, service), httpx.Client(base_url=url) as client:
        wait_until(lambda: client.get("/ready").status_code == 200)
        service.batcher.throughput = Throughput(prior=2000.0)  # a known rate instead of the calibrated one
        fake.hold()  # the rate stays at 2,000 estimated tokens/s while the model is held
        results: dict = {}
        long_text = "word " * 200  # 252 estimated tokens each (the estimate stops at the model's 256)
        threads = [post_in_thread(url, [long_text] * 16, results, "big")]  # ~4,000 tokens: alone, admitted
        assert fake.entered.wait(20)
        refused = client.post("/v1/embeddings", json={"input": [long_text] * 16})  # ~2 s of work before it
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"] == "4"  # ceil(2 x 4,032 tokens / 2,000 per s - 1 s)
        assert "would wait about 4.0s" in refused.json()["error"]["message"]
        # decided on the raw body before routing and the other checks (a flood's refusals cost the least)
        early = client.post("/v1/embeddings", json={"input": [long_text] * 16, "dimensions": 10**6})
        assert early.status_code == 429 and early.headers["Retry-After"] == "4", early.text
        assert not fake.gate.is_set() and "big" not in results  # refused while the model was still held
        depth = queue_depth(client)
        threads.append(post_in_thread(url, ["a short one"], results, "small"))  # a small request still fits
        wait_until(lambda: queue_depth(client) == depth + 1)
        fake.release()
        for thread in threads:
            thread.join(30)
        assert results["big"].status_code == results["small"].status_code == 200
        assert 'sentemb_rejected_requests_total{reason="overloaded"} 2.0' in client.get("/metrics").text


def test_a_small_request_is_served_between_the_slices_of_a_large_one(fake, encoder):
    settings = ServerSettings(
        port=0, max_inputs=400, queue_size=4096, max_wait_ms=2, drain_seconds=0, max_queue_seconds=1000.0
    )
    texts = ["word " * 100 + str(i) for i in range(200)]  # ~26,000 estimated tokens in all
    word, sentence = token_id(encoder, "word"), token_id(encoder, "sentence")
    with serve_in_background(encoder, settings) as url, httpx.Client(base_url=url) as client:
        wait_until(lambda: client.get("/ready").status_code == 200)
        fake.hold()
        results: dict = {}
        threads = [post_in_thread(url, texts, results, "big")]
        assert fake.entered.wait(20)  # the first slice of the big request is in the model
        depth = queue_depth(client)
        assert 0 < depth < len(texts)
        threads.append(post_in_thread(url, ["just one sentence"], results, "small"))
        wait_until(lambda: queue_depth(client) == depth + 1)
        fake.batches.clear()
        fake.release()
        for thread in threads:
            thread.join(60)
        assert results["small"].status_code == 200
        small_at = next(i for i, b in enumerate(fake.batches) if (b.input_ids == sentence).any())
        later = [b for b in fake.batches[small_at + 1 :] if (b.input_ids == word).any()]
        assert len(later) >= 2, "the small request should run before most of the large one"
        body = results["big"].json()
        assert [d["index"] for d in body["data"]] == list(range(len(texts)))  # reassembled in order
        np.testing.assert_allclose([d["embedding"] for d in body["data"]], encoder.encode(texts), rtol=1e-6)
        expected = sum(i.num_tokens for i in encoder.encode_with_info(texts).info)
        assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] == expected


def test_usage_counts_the_tokens_embedded_after_truncation(fake, encoder):
    long_text = "word " * 1000  # 1,000 tokens; the model keeps 256 - 2 special tokens
    with serve_in_background(encoder, SETTINGS) as url, httpx.Client(base_url=url) as client:
        body = client.post("/v1/embeddings", json={"input": [long_text, "two words"]}).json()
    assert body["usage"] == {"prompt_tokens": 254 + 2, "total_tokens": 254 + 2}


def test_disconnected_client_has_its_queued_work_dropped(fake, encoder):
    abandoned = token_id(encoder, "zebra")  # a word the calibration sentences lack
    with serve_in_background(encoder, SETTINGS) as url, httpx.Client(base_url=url) as client:
        wait_until(lambda: client.get("/ready").status_code == 200)
        fake.hold()
        results: dict = {}
        running = post_in_thread(url, ["in the model"], results, "running")
        assert fake.entered.wait(20)
        with socket.create_connection(_address(url)) as sock:
            body = b'{"input": "zebra text"}'
            sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            wait_until(lambda: queue_depth(client) == 1)
        wait_until(lambda: queue_depth(client) == 0)  # the client hung up: its input left the queue
        fake.release()
        running.join(30)
        assert results["running"].status_code == 200
        assert client.post("/v1/embeddings", json={"input": "after"}).status_code == 200
        assert not fake.saw(abandoned)
        assert 'sentemb_rejected_requests_total{reason="client_gone"} 1.0' in client.get("/metrics").text


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def test_shutdown_waits_for_in_flight_requests(fake, encoder):
    """What SIGTERM does after the drain period: stop listening, finish in-flight work, then stop."""
    server = build_server(encoder, SETTINGS, log_level="warning")
    assert server.config.timeout_keep_alive == SETTINGS.keep_alive_seconds
    lifecycle = server.config.app.state.service.lifecycle
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        address = sock.getsockname()
        url = f"http://127.0.0.1:{address[1]}"
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        wait_until(lambda: server.started)
        wait_until(lambda: httpx.get(f"{url}/ready").status_code == 200)
        fake.hold()
        results: dict = {}
        in_flight = post_in_thread(url, ["finish me", "and me"], results, "in_flight")
        assert fake.entered.wait(20)
        server.should_exit = True
        wait_until(lambda: not _accepts(address))  # the listener is closed: shutdown has begun
        assert thread.is_alive() and "in_flight" not in results  # held by the gate: it must wait for it
        fake.release()
        in_flight.join(30)
        thread.join(30)
        assert not thread.is_alive()
        assert results["in_flight"].status_code == 200
        assert len(results["in_flight"].json()["data"]) == 2
        assert lifecycle.phase.value == "draining"


def _accepts(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=5):
            return True
    except OSError:
        return False


def test_closing_batcher_answers_503(fake, encoder):
    async def main():
        from sentemb.server import create_app

        app = create_app(encoder, SETTINGS)
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


def test_ready_is_503_until_the_first_forward_pass_finishes(fake, encoder):
    fake.hold()  # the warm-up forward pass blocks
    with serve_in_background(encoder, SETTINGS) as url, httpx.Client(base_url=url) as client:
        assert fake.entered.wait(20)
        starting = client.get("/ready")
        assert starting.status_code == 503
        assert starting.json()["error"]["code"] == "not_ready"
        assert client.get("/health").status_code == 200  # alive while loading
        fake.release()
        wait_until(lambda: client.get("/ready").status_code == 200)


def test_a_broken_model_is_not_ready_and_fails_requests_in_openai_shape(fake, encoder):
    fake.fail_on_token = 101  # [CLS]: every batch
    with serve_in_background(encoder, SETTINGS) as url, httpx.Client(base_url=url) as client:
        assert client.get("/ready").status_code == 503
        response = client.post("/v1/embeddings", json={"input": "x"})
        assert response.status_code == 500  # the server's fault, not the client's
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "server_error"
        assert "broke" not in error["message"]  # internal messages stay internal


def test_a_poisoned_request_fails_alone_and_its_micro_batch_neighbours_get_their_vectors(fake, encoder):
    """One bad request shares a micro-batch with good ones: only it fails (isolation), and a text that
    is not valid Unicode is refused with a 400 before it is queued at all."""
    settings = ServerSettings(port=0, max_inputs=16, queue_size=64, max_wait_ms=2, drain_seconds=0)
    with serve_in_background(encoder, settings) as url, httpx.Client(base_url=url) as client:
        wait_until(lambda: client.get("/ready").status_code == 200)
        fake.fail_on_token = token_id(encoder, "poison")  # the model fails on any call holding it
        fake.hold()
        results: dict = {}
        threads = [post_in_thread(url, ["blocker"], results, "blocker")]
        assert fake.entered.wait(20)
        good = {f"good{i}": [f"text {i} {j}" for j in range(1 + i % 3)] for i in range(8)}
        bad = {f"bad{i}": ["fine", f"poison {i}"] for i in range(3)}
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
        wait_until(lambda: queue_depth(client) == sum(map(len, jobs.values())))
        fake.release()
        for thread in threads:
            thread.join(30)
        assert served_batches(client) == 1 + len(good), "the blocker, then each good one alone"
        for key, texts in good.items():
            assert results[key].status_code == 200, results[key].text
            got = [d["embedding"] for d in results[key].json()["data"]]
            np.testing.assert_allclose(got, encoder.encode(texts), rtol=1e-6)
        for key in bad:
            assert results[key].status_code == 500
            assert results[key].json()["error"]["type"] == "server_error"
    for response, index in ((surrogate, 1), (raw, 0)):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "input" and error["code"] == "invalid_text"
        assert f"input[{index}]" in error["message"] and "Unicode" in error["message"]
