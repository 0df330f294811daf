"""Hostile values in every field of every route, against a real server (fake backend): never a 500,
always the JSON error shape, and every message and log line printable (client strings escaped).

The cases are generated from a fixed seed, so a failure names a case that reruns the same way."""

from __future__ import annotations

import json
import logging
import random
import socket
import urllib.parse

import httpx
import pytest

pytest.importorskip("fastapi")

from fakes import FakeBackend, fake_encoder
from sentemb.server import ServerSettings, serve_in_background

KEY = "fuzz-key"
SEED = 20240611
SETTINGS = ServerSettings(port=0, api_key=KEY, drain_seconds=0, max_inputs=8, queue_size=64, max_chars=2000)
FIELDS = ("input", "model", "encoding_format", "dimensions", "prompt_name", "embedding_type", "user")
STRINGS = [
    "", "\x00", "a\x00b", "\ud800", "x\udfffy", "\ud83d\ude00", "\n\r\t", "\x1b[31mred", "é漢🙂", "'\"\\{}%s%n",
    "\u202eevil", "\ufeff", "query", "float", "base64", "int8", "a" * 5000, "b" * 200_000,
]  # fmt: skip
VALUES: list[object] = [
    *STRINGS, None, True, False, 0, -1, 3, 2**70, 1.5, float("nan"), float("inf"), [], [""], ["ok", None],
    ["\ud800"], ["ok"] * 9, [1, 2, 3], [[1, 2]], [{"a": 1}], {}, {"input": "x"}, [["a"]], ["a" * 3000],
]  # fmt: skip
LOGGERS = ("sentemb", "uvicorn", "uvicorn.error", "uvicorn.access")


def body_cases() -> list[tuple[str, bytes]]:
    """One field at a time set to each value (the others valid), then random mixes of fields."""
    cases = []
    for field in FIELDS:
        for value in VALUES:
            body = {"input": "ok", field: value}
            cases.append((f"{field}={value!r:.40}", json.dumps(body).encode()))
    rng = random.Random(SEED)
    for n in range(150):
        body = {field: rng.choice(VALUES) for field in rng.sample(FIELDS, rng.randint(0, len(FIELDS)))}
        cases.append((f"mix {n}", json.dumps(body).encode()))
    raw = [
        b"", b"null", b"[]", b'"x"', b"{", b'{"input": "\xff\xfe"}', b'{"input": "\\u0000"}', b"\x00" * 64,
        b'{"input": ' * 5000, b'{"input": "ok", "input": 1}', '{"input": "\u00e9"}'.encode("latin-1"),
        b'{"input": "ok", "\\ud800\\u0000": 1}', b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"input": "ok"}' + b" " * 1000 + b"trailing", b'{"input": 1e999999}', b'\xef\xbb\xbf{"input": "bom"}',
    ]  # fmt: skip
    cases += [(f"raw {n}", data) for n, data in enumerate(raw)]
    return cases


def path_cases() -> list[str]:
    names = [urllib.parse.quote(s[:20_000].encode("utf-8", "surrogatepass"), safe="") for s in STRINGS if s]
    names += ["%ED%A0%80", "%00", "%FF%FE", "..%2F..%2Fetc%2Fpasswd", "a/b/c", "%"]
    return [f"/v1/models/{name}" for name in names] + [
        f"{route}?q={name}" for route in ("/health", "/ready", "/metrics", "/v1/models") for name in names[:6]
    ] + [f"/{name}" for name in names[:6]]  # fmt: skip


HEADER_CASES: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/\xff\xfe; charset=\x80"),
    (b"content-type", b"a" * 8000),
    (b"content-encoding", b"\xe9\xff"),
    (b"content-encoding", b"gzip"),  # the body is not gzip
    (b"content-encoding", b"deflate, br"),
    (b"content-length", b"-5"),
    (b"content-length", b"abc"),
    (b"content-length", b"99999999999999999999999"),
    (b"authorization", b"Bearer \xff\xfe"),
    (b"authorization", b"Basic " + b"x" * 4000),
    (b"authorization", b"bearer"),
    (b"transfer-encoding", b"chunked"),  # the body is not chunked
    (b"expect", b"100-continue"),
]


@pytest.fixture(scope="module")
def url():
    with serve_in_background(fake_encoder(FakeBackend()), SETTINGS) as base:
        yield base


@pytest.fixture()
def logs(caplog, monkeypatch):
    for name in LOGGERS:
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def check(response: httpx.Response, case: str) -> None:
    assert response.status_code < 500, f"{case}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, case
        assert error["message"].isprintable() and len(error["message"]) < 1000, f"{case}: {error['message']!r}"


def check_logs(logs: pytest.LogCaptureFixture) -> None:
    for record in logs.records:
        line = record.getMessage()
        assert record.levelno < logging.ERROR, line[:2000]
        assert all(part.isprintable() for part in line.split("\n")), repr(line[:300])


def test_no_body_field_value_makes_a_500(url, logs):
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
        for case, body in body_cases():
            check(client.post("/v1/embeddings", content=body), case)
    check_logs(logs)


def test_no_path_or_query_makes_a_500(url, logs):
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
        for path in path_cases():
            for method in ("GET", "HEAD", "POST"):
                response = client.request(method, path)
                if method != "HEAD":
                    check(response, f"{method} {path}")
                else:
                    assert response.status_code < 500, path
    check_logs(logs)


def raw_request(url: str, head: bytes, body: bytes) -> tuple[int, bytes]:
    """One request over a socket, so that any header bytes can be sent; the status and the body."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + b"connection: close\r\n\r\n" + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    status_line, _, rest = reply.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def test_no_header_value_makes_a_500(url, logs):
    body = b'{"input": "ok"}'
    for n, (name, value) in enumerate(HEADER_CASES):
        for path in (b"/v1/embeddings", b"/v1/models/x", b"/ready"):
            lines = [b"POST " + path + b" HTTP/1.1", b"host: x", b"authorization: Bearer " + KEY.encode()]
            if name != b"content-length":
                lines.append(b"content-length: %d" % len(body))
            lines = [line for line in lines if not line.startswith(name + b":")] + [name + b": " + value]
            status, payload = raw_request(url, b"\r\n".join(lines) + b"\r\n", body)
            case = f"header {n} {path!r}"
            assert status < 500, f"{case}: {status} {payload[:300]!r}"
            if status >= 400 and payload:
                error = json.loads(payload)["error"]
                assert error["message"].isprintable(), f"{case}: {error['message']!r}"
    check_logs(logs)


def test_an_unknown_model_name_is_quoted_escaped(url):
    auth = {"Authorization": f"Bearer {KEY}"}
    body = json.dumps({"input": "x", "model": "ab\ud800\x00"}).encode()  # "\ud800" escaped, as JSON allows
    response = httpx.post(f"{url}/v1/embeddings", content=body, headers=auth)
    assert response.status_code == 404
    assert "'ab\\ud800\\x00'" in response.json()["error"]["message"]
