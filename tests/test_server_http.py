"""Slow and malformed clients, over raw sockets against a real server (fake backend): read deadlines,
the header cap, connection slots (idle and slow connections make room; busy ones are kept), JSON
refusals, HEAD, bodies sent as curl -d sends them, gzip."""

from __future__ import annotations

import gzip
import json
import socket

import httpx
import pytest

pytest.importorskip("fastapi")

from fakes import FakeBackend, fake_encoder
from sentemb.server import ServerSettings, serve_in_background
from waiting import wait_until

SETTINGS = ServerSettings(
    port=0, drain_seconds=0, header_timeout=0.5, read_timeout=0.5, max_connections=6, max_client_connections=6,
    max_header_bytes=16 * 1024, max_body_bytes=1024 * 1024,
)  # fmt: skip
HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
# headers in, body still to come: the connection is serving a request until its body deadline
BUSY = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"


@pytest.fixture(scope="module")
def url():
    with serve_in_background(fake_encoder(FakeBackend()), SETTINGS) as base:
        yield base


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (the socket timeout only turns a hang into a failure)."""
    sock.settimeout(30)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(url: str, data: bytes) -> tuple[int, dict]:
    with socket.create_connection(address(url)) as sock:
        sock.sendall(data)
        raw = read_all(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    ("sent", "part"),
    [
        (b"POST /v1/embed", "headers"),  # half a request line
        (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n", "headers"),  # headers, no end
        (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inp", "body"),  # half a body
    ],
)
def test_a_stalled_request_is_answered_408_and_closed(url, sent, part):
    status, body = exchange(url, sent)
    assert status == 408
    assert body["error"]["code"] == "request_timeout" and part in body["error"]["message"]


def test_a_connection_that_sends_nothing_is_closed(url):
    with socket.create_connection(address(url)) as sock:
        assert read_all(sock) == b""  # closed by the server after header_timeout


def connect(url: str, source: str = "127.0.0.1") -> socket.socket:
    """A connection from ``source`` (any 127.x.y.z address reaches a loopback server on Linux)."""
    return socket.create_connection(address(url), source_address=(source, 0))


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response whose body has a Content-Length, on a connection that stays open."""
    sock.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    fields = dict(line.lower().split(b":", 1) for line in head.split(b"\r\n")[1:])
    length = int(fields[b"content-length"])
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), body


def served(url: str, request: bytes, source: str = "127.0.0.1") -> tuple[int, dict]:
    with connect(url, source) as sock:
        sock.sendall(request)
        status, body = read_response(sock)
    return status, json.loads(body)


@pytest.fixture()
def roomy():
    """A server whose deadlines outlast the test, so only the slots decide who gets in."""
    settings = SETTINGS.replace(header_timeout=120.0, read_timeout=120.0, max_client_connections=4)
    with serve_in_background(fake_encoder(FakeBackend()), settings) as base:
        yield base


def test_idle_keep_alive_connections_make_room_longest_idle_first(roomy):
    sources = ["127.0.0.2"] * 4 + ["127.0.0.3"] * 2  # 127.0.0.2 holds the most slots (its cap of 4)
    idle = [connect(roomy, source) for source in sources]
    newcomers = []
    try:
        for sock in idle:
            sock.sendall(HEALTH)
            assert read_response(sock)[0] == 200  # now idle, kept alive; the server is full
        for n in range(2):
            newcomers.append(connect(roomy))
            newcomers[-1].sendall(HEALTH)
            assert read_response(newcomers[-1])[0] == 200  # it took the slot of 127.0.0.2's longest idle
            assert read_all(idle[n]) == b""  # closed silently, as a keep-alive timeout closes it
        idle[2].sendall(HEALTH)  # the most recently active is still open: it was not evicted
        assert read_response(idle[2])[0] == 200
        newcomers[0].sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # on a connection holding a slot
        metrics = read_response(newcomers[0])[1].decode()
        assert 'sentemb_dropped_connections_total{reason="evicted_idle"} 2.0' in metrics
        assert "sentemb_connections 6.0" in metrics  # every slot is still held
    finally:
        for sock in idle + newcomers:
            sock.close()


def test_slow_header_senders_make_room_and_get_a_json_503(roomy):
    slow = [connect(roomy, f"127.0.0.{2 + n % 2}") for n in range(SETTINGS.max_connections)]
    try:
        for sock in slow:
            sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # and nothing more
        status, _ = served(roomy, HEALTH)
        assert status == 200
        status, body = exchange_on(slow[0])
        assert status == 503 and body["error"]["code"] == "too_many_connections"
        assert "whole request at once" in body["error"]["message"]
        assert 'sentemb_dropped_connections_total{reason="evicted_headers"}' in httpx.get(f"{roomy}/metrics").text
    finally:
        for sock in slow:
            sock.close()


def test_a_new_connection_gets_503_only_when_every_slot_is_serving_a_request(roomy):
    busy = [connect(roomy, f"127.0.0.{2 + n % 2}") for n in range(SETTINGS.max_connections)]
    try:
        for sock in busy:
            sock.sendall(BUSY)
        wait_until(lambda: served(roomy, HEALTH)[0] == 503, "the busy connections to hold every slot")
        status, body = served(roomy, HEALTH)
        assert status == 503 and body["error"]["code"] == "too_many_connections"
        assert "all serving requests" in body["error"]["message"]
    finally:
        for sock in busy:
            sock.close()
    wait_until(lambda: served(roomy, HEALTH)[0] == 200, "the slots to be freed")
    assert 'sentemb_dropped_connections_total{reason="server_full"}' in httpx.get(f"{roomy}/metrics").text


def test_a_client_at_its_cap_makes_room_from_its_own_connections(roomy):
    """max_client_connections=4: one address's busy connections cannot take the slots others need."""
    busy = [connect(roomy, "127.0.0.2") for _ in range(4)]
    try:
        for sock in busy:
            sock.sendall(BUSY)
        wait_until(lambda: served(roomy, HEALTH, "127.0.0.2")[0] == 429, "127.0.0.2 to hold its 4 slots")
        status, body = served(roomy, HEALTH, "127.0.0.2")
        assert status == 429 and "this address has 4 connections open" in body["error"]["message"]
        assert body["error"]["type"] == "rate_limit_error"
        assert served(roomy, HEALTH, "127.0.0.3")[0] == 200  # another address still gets in
        assert served(roomy, HEALTH)[0] == 200
    finally:
        for sock in busy:
            sock.close()


def exchange_on(sock: socket.socket) -> tuple[int, dict]:
    raw = read_all(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_headers_over_the_cap_are_431_in_json(url):
    big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    status, body = exchange(url, big)
    assert status == 431 and body["error"]["code"] == "request_header_fields_too_large"
    endless = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000  # never ends: refused all the same
    status, body = exchange(url, endless)
    assert status == 431
    assert httpx.get(f"{url}/health").status_code == 200


def test_malformed_http_is_answered_in_json(url):
    status, body = exchange(url, b"GARBAGE \x01\x02 NOT HTTP\r\n\r\n")
    assert status == 400 and body["error"]["code"] == "invalid_http"


@pytest.mark.parametrize("path", ["/health", "/ready", "/v1/models", "/metrics"])
def test_head_is_allowed_where_get_is(url, path):
    response = httpx.head(f"{url}{path}")
    assert response.status_code == 200 and response.content == b""


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_json_body_is_accepted_whatever_its_content_type(url, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = httpx.post(f"{url}/v1/embeddings", content=b'{"input": "curl -d sends a form type"}', headers=headers)
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 1


def test_a_body_that_is_not_json_names_the_content_type(url):
    response = httpx.post(f"{url}/v1/embeddings", content=b"input=hello", headers={"Content-Type": "text/plain"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "the request body is not valid JSON (Content-Type: text/plain; send application/json)"
    )


def test_gzip_bodies_are_accepted_and_a_zip_bomb_is_413(url):
    packed = gzip.compress(b'{"input": ["gzip is fine"]}')
    response = httpx.post(f"{url}/v1/embeddings", content=packed, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    bomb = gzip.compress(b'{"input": "' + b"a" * 50_000_000 + b'"}')  # 50 MB unpacked, ~50 KB sent
    assert len(bomb) < SETTINGS.max_body_bytes
    response = httpx.post(f"{url}/v1/embeddings", content=bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413 and "gzip" in response.json()["error"]["message"]
    response = httpx.post(f"{url}/v1/embeddings", content=b"{}", headers={"Content-Encoding": "br"})
    assert response.status_code == 415 and "'br'" in response.json()["error"]["message"]


def test_the_openapi_schema_builds_and_documents_the_request_body(url):
    spec = httpx.get(f"{url}/openapi.json").json()
    body = spec["paths"]["/v1/embeddings"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "input" in body["properties"]
    assert set(spec["paths"]["/health"]) == {"get"}  # HEAD is answered, but not a second operation
