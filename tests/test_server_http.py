"""Slow and malformed clients, over raw sockets against a real server (fake backend): read deadlines,
the header cap, the connection limit, JSON refusals, HEAD, bodies sent as curl -d sends them, gzip."""

from __future__ import annotations

import gzip
import json
import socket

import httpx
import pytest

pytest.importorskip("fastapi")

from fakes import FakeBackend, fake_encoder
from sentemb.server import ServerSettings, serve_in_background

SETTINGS = ServerSettings(
    port=0, drain_seconds=0, read_timeout=0.5, max_connections=6, max_header_bytes=16 * 1024,
    max_body_bytes=1024 * 1024,
)  # fmt: skip


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
        assert read_all(sock) == b""  # closed by the server after read_timeout


def test_connections_past_the_limit_are_refused_with_503():
    settings = SETTINGS.replace(read_timeout=120.0)  # the idle connections stay for the whole test
    with serve_in_background(fake_encoder(FakeBackend()), settings) as url:
        idle = [socket.create_connection(address(url)) for _ in range(settings.max_connections)]
        try:
            status, body = exchange(url, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        finally:
            for sock in idle:
                sock.close()
    assert status == 503 and body["error"]["code"] == "too_many_connections"


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
