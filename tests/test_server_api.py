"""The HTTP service against the real default model: a real uvicorn server on a loopback port,
called with the official ``openai`` client (float and base64) and with httpx for the error paths."""

from __future__ import annotations

import base64
import logging

import httpx
import numpy as np
import pytest

from waiting import wait_until

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from sentemb.server import ServerSettings, serve_in_background  # noqa: E402

KEY = "test-key-123"
CANARY = "zebra-canary-7f3a9 in the request text"
SENTENCES = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "A man is playing a guitar on a street corner while people walk by.",
]
SETTINGS = ServerSettings(
    port=0, api_key=KEY, max_inputs=16, max_chars=4000, max_body_bytes=400_000, queue_size=64, drain_seconds=0
)


@pytest.fixture(scope="module")
def server(default_encoder):
    with serve_in_background(default_encoder, SETTINGS) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def oai(server):
    c = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=30)
    yield c
    c.close()


def assert_error(response: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


# -- the openai client, vectors against the library ------------------------------------------------


@pytest.mark.parametrize("encoding_format", ["float", "base64", None])
def test_openai_client_batch_matches_library(oai, default_encoder, encoding_format):
    kwargs = {} if encoding_format is None else {"encoding_format": encoding_format}
    response = oai.embeddings.create(model="all-MiniLM-L6-v2", input=SENTENCES, **kwargs)
    expected = default_encoder.encode_with_info(SENTENCES)
    assert [d.index for d in response.data] == list(range(len(SENTENCES)))
    if encoding_format == "base64":  # an explicit format comes back as sent: little-endian float32 bytes
        got = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in response.data])
    else:  # float, or the client's default (it asks for base64 and decodes it itself)
        got = np.array([d.embedding for d in response.data], dtype=np.float32)
    np.testing.assert_allclose(got, expected.embeddings, atol=1e-5)
    tokens = sum(item.num_tokens for item in expected.info)
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens
    assert response.model == default_encoder.config.model


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_openai_client_single_string(oai, default_encoder, encoding_format):
    response = oai.embeddings.create(
        model=default_encoder.config.model, input=SENTENCES[2], encoding_format=encoding_format
    )
    assert len(response.data) == 1
    vector = response.data[0].embedding
    if encoding_format == "base64":
        vector = np.frombuffer(base64.b64decode(vector), dtype="<f4")
    np.testing.assert_allclose(np.asarray(vector, dtype=np.float32), default_encoder.encode(SENTENCES[2])[0], atol=1e-5)


def test_dimensions_truncates_and_renormalises(oai, default_encoder):
    response = oai.embeddings.create(
        model="all-MiniLM-L6-v2", input=SENTENCES[:2], dimensions=64, encoding_format="float"
    )
    got = np.array([d.embedding for d in response.data], dtype=np.float32)
    prefix = default_encoder.encode(SENTENCES[:2])[:, :64]
    np.testing.assert_allclose(got, prefix / np.linalg.norm(prefix, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_models_routes(oai, client, default_encoder):
    assert [m.id for m in oai.models.list()] == [default_encoder.config.model]
    assert client.get("/v1/models/all-MiniLM-L6-v2").json()["id"] == "all-MiniLM-L6-v2"
    assert_error(client.get("/v1/models/gpt-4"), 404, code="model_not_found")


def test_unknown_model_is_404_in_openai_shape(oai):
    with pytest.raises(openai.NotFoundError) as info:
        oai.embeddings.create(model="text-embedding-3-small", input="hi")
    assert info.value.body["code"] == "model_not_found"
    assert info.value.body["param"] == "model"


def test_health_ready_metrics(server, client):
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}  # no key needed, answered while warming up
    wait_until(lambda: client.get("/ready").status_code == 200, "/ready", hang_s=300)
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    client.post("/v1/embeddings", json={"input": SENTENCES})
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    for name in (
        "sentemb_requests_total",
        "sentemb_inputs_total",
        "sentemb_tokens_total",
        "sentemb_batch_inputs_bucket",
        "sentemb_queue_inputs",
        "sentemb_request_seconds_bucket",
        "sentemb_batch_seconds_bucket",
    ):
        assert name in text
    assert 'sentemb_requests_total{method="POST",route="/v1/embeddings",status="200"}' in text


def test_truncation_header_counts_truncated_inputs(client, default_encoder):
    long_text = "word " * 600  # about 600 tokens: over the model's 256
    response = client.post("/v1/embeddings", json={"input": [long_text, "short", long_text]})
    assert response.status_code == 200
    assert response.headers["X-Truncated-Inputs"] == "2"
    np.testing.assert_allclose(response.json()["data"][0]["embedding"], default_encoder.encode(long_text)[0], atol=1e-5)
    assert client.post("/v1/embeddings", json={"input": "short"}).headers["X-Truncated-Inputs"] == "0"


def test_300k_character_input_is_capped_before_tokenising(client, default_encoder):
    text = "lorem ipsum " * 25_000  # 300,000 characters
    response = client.post("/v1/embeddings", json={"input": [text]})
    assert response.status_code == 200
    assert response.headers["X-Truncated-Inputs"] == "1"
    expected = default_encoder.encode(text[: SETTINGS.max_chars])[0]
    np.testing.assert_allclose(response.json()["data"][0]["embedding"], expected, atol=1e-5)


# -- error paths --------------------------------------------------------------------------------------


def test_malformed_json_body(client):
    response = client.post("/v1/embeddings", content=b'{"input": ["a",', headers={"Content-Type": "application/json"})
    assert "JSON" in assert_error(response, 400)["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": 5}, "input"),
        ({"input": ["ok", 3]}, "input"),
        ({"input": [None]}, "input"),
        ({"input": {"text": "a"}}, "input"),
        ({"model": "all-MiniLM-L6-v2"}, "input"),  # missing input
        ({"input": "a", "encoding_format": "hex"}, "encoding_format"),
        ({"input": "a", "dimensions": "64"}, "dimensions"),
        ({"input": "a", "model": 7}, "model"),
        (["not", "an", "object"], None),
    ],
)
def test_wrong_types_are_400(client, body, param):
    error = assert_error(client.post("/v1/embeddings", json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"input": ""}, "empty_input"),
        ({"input": ["a", ""]}, "empty_input"),
        ({"input": []}, "empty_input"),
        ({"input": [101, 2023, 102]}, "unsupported_input"),
        ({"input": [[101, 2023, 102]]}, "unsupported_input"),
        ({"input": ["x"] * 17}, "too_many_inputs"),
    ],
)
def test_bad_inputs_are_400(client, body, code):
    assert_error(client.post("/v1/embeddings", json=body), 400, param="input", code=code)


@pytest.mark.parametrize("dimensions", [0, -1, 385])
def test_dimensions_out_of_range(client, dimensions):
    assert_error(client.post("/v1/embeddings", json={"input": "a", "dimensions": dimensions}), 400, param="dimensions")


def test_body_over_limit_is_413(client):
    big = {"input": ["x" * 1000] * 500}  # about 500 kB, over the 400 kB limit
    assert_error(client.post("/v1/embeddings", json=big), 413, code="request_too_large")


def test_chunked_body_over_limit_is_413(client):
    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"input": ["'
        for _ in range(50):
            yield b"y" * 10_000
        yield b'"]}'

    response = client.post("/v1/embeddings", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(response, 413)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": f"Bearer {KEY}x"}],
)
@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/embeddings"), ("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/ready")]
)
def test_missing_or_bad_key_is_401(server, headers, method, path):
    response = httpx.request(method, f"{server}{path}", headers=headers, json={"input": "a"})
    assert_error(response, 401, code="invalid_api_key")


def test_openai_client_with_bad_key(server):
    with (
        openai.OpenAI(base_url=f"{server}/v1", api_key="nope", max_retries=0) as bad,
        pytest.raises(openai.AuthenticationError),
    ):
        bad.embeddings.create(model="all-MiniLM-L6-v2", input="hi")


def test_unknown_route_and_method(client):
    assert_error(client.get("/v1/nothing"), 404)
    assert_error(client.get("/v1/embeddings"), 405)


def test_cors_is_off_by_default(client):
    response = client.options(
        "/v1/embeddings", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in response.headers


def test_cors_origins_and_long_text_error_policy(default_model_dir):
    """A second server: CORS for one origin, long-text policy 'error', no API key."""
    import sentemb

    encoder = sentemb.load(str(default_model_dir), device="cpu", long_text="error")
    settings = ServerSettings(port=0, cors_origins=("https://app.example",), max_chars=4000, drain_seconds=0)
    with serve_in_background(encoder, settings) as url, httpx.Client(base_url=url, timeout=30) as c:
        pre = c.options(
            "/v1/embeddings", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        )
        assert pre.headers["access-control-allow-origin"] == "https://app.example"
        other = c.options(
            "/v1/embeddings", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in other.headers
        assert c.post("/v1/embeddings", json={"input": "fine"}).status_code == 200  # no key configured
        too_many_tokens = c.post("/v1/embeddings", json={"input": ["short", "word " * 600]})
        error = assert_error(too_many_tokens, 400, param="input", code="context_length_exceeded")
        assert "input[1]" in error["message"]
        too_many_chars = c.post("/v1/embeddings", json={"input": "z" * 300_000})
        assert_error(too_many_chars, 400, param="input", code="context_length_exceeded")


# -- privacy ------------------------------------------------------------------------------------------


SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "sentemb", "fastapi", "starlette")


def test_request_texts_never_reach_the_logs(client, caplog, monkeypatch):
    """Every server-side logger at DEBUG, uvicorn's access log on and propagating to caplog."""
    caplog.set_level(logging.DEBUG)
    for name in SERVER_LOGGERS:
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
        caplog.set_level(logging.DEBUG, logger=name)
    bodies = [
        {"input": [CANARY, SENTENCES[0]]},
        {"input": CANARY, "encoding_format": "base64"},
        {"input": [CANARY, 5]},
        {"input": [CANARY, ""]},
        {"input": CANARY, "model": CANARY},
        {"input": CANARY, "dimensions": CANARY},
        {"input": CANARY * 5_000},  # 190,000 characters, capped
        {"input": [CANARY] * 17},
    ]
    statuses = [client.post("/v1/embeddings", json=body).status_code for body in bodies]
    statuses.append(
        client.post("/v1/embeddings", content=CANARY.encode(), headers={"Content-Type": "application/json"}).status_code
    )
    statuses.append(client.get(f"/v1/embeddings?input={CANARY}").status_code)
    assert statuses == [200, 200, 400, 400, 404, 400, 200, 400, 400, 405]
    server_records = [r for r in caplog.records if r.name.split(".")[0] in {n.split(".")[0] for n in SERVER_LOGGERS}]
    logged = "\n".join(r.getMessage() for r in server_records)
    assert "/v1/embeddings" in logged, "the access logs should have recorded the requests"
    assert any(r.name == "uvicorn.access" for r in server_records)
    assert "zebra-canary" not in logged
    assert "zebra-canary" not in caplog.text.replace(
        f"input={CANARY}".replace(" ", "%20"), ""
    )  # client-side URL logs aside


def wait_until_ready(client: httpx.Client) -> None:
    """Warm-up (and the int8 calibration) is done once /ready answers 200."""
    wait_until(lambda: client.get("/ready").status_code == 200, "/ready", hang_s=300)


@pytest.mark.parametrize("dimensions", [None, 128])
def test_embedding_type_quantises_as_the_library_does(client, default_encoder, dimensions):
    import sentemb
    from sentemb.export.recipe import CALIBRATION_FILE
    from sentemb.pooling import truncate_dim
    from sentemb.retrieval.quantize import quantization_ranges

    wait_until_ready(client)
    extra = {} if dimensions is None else {"dimensions": dimensions}
    plain = client.post("/v1/embeddings", json={"input": SENTENCES, **extra}).json()["data"]
    floats = np.array([d["embedding"] for d in plain], dtype=np.float32)
    calibration = default_encoder.encode(CALIBRATION_FILE.read_text(encoding="utf-8").splitlines())
    ranges = quantization_ranges(truncate_dim(calibration, dimensions, renormalize=dimensions is not None))
    for kind, dtype in (("int8", np.int8), ("uint8", np.uint8), ("binary", np.int8), ("ubinary", np.uint8)):
        expected = sentemb.quantize(floats, kind, ranges=ranges if kind.endswith("int8") else None)
        listed = client.post("/v1/embeddings", json={"input": SENTENCES, "embedding_type": kind, **extra})
        assert listed.status_code == 200, listed.text
        np.testing.assert_array_equal([d["embedding"] for d in listed.json()["data"]], expected)
        packed = client.post(
            "/v1/embeddings",
            json={"input": SENTENCES, "embedding_type": kind, "encoding_format": "base64", **extra},
        ).json()["data"]
        got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype=dtype) for d in packed])
        np.testing.assert_array_equal(got, expected)


def test_embedding_type_with_the_openai_client(oai, client):
    wait_until_ready(client)
    response = oai.embeddings.create(
        model="all-MiniLM-L6-v2", input=SENTENCES[:2], encoding_format="float", extra_body={"embedding_type": "binary"}
    )
    rows = [d.embedding for d in response.data]
    assert all(len(row) == 384 // 8 and all(-128 <= v <= 127 and v == int(v) for v in row) for row in rows)


def test_unknown_embedding_type_is_400(client):
    assert_error(client.post("/v1/embeddings", json={"input": "x", "embedding_type": "int4"}), 400, "embedding_type")


def test_prompt_name_puts_the_models_prompt_before_each_input(default_model_dir, tmp_path):
    import json
    import shutil

    import sentemb

    folder = tmp_path / "with-prompts"
    shutil.copytree(default_model_dir, folder)
    config = folder / "config_sentence_transformers.json"
    data = json.loads(config.read_text()) if config.exists() else {}
    data["prompts"] = {"query": "query: ", "document": "passage: "}
    config.write_text(json.dumps(data))
    encoder = sentemb.load(str(folder), device="cpu")
    texts = SENTENCES[:2]
    with serve_in_background(encoder, SETTINGS.replace(api_key=None)) as url, httpx.Client(base_url=url) as c:
        for name in ("query", "document", None):
            body = {"input": texts} if name is None else {"input": texts, "prompt_name": name}
            response = c.post("/v1/embeddings", json=body)
            assert response.status_code == 200, response.text
            got = np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)
            np.testing.assert_allclose(got, encoder.encode(texts, prompt_name=name), atol=1e-5)
            if name == "query":
                query_vectors = got
        assert not np.allclose(query_vectors, encoder.encode(texts), atol=1e-3)  # the prompt changed them
        error = assert_error(c.post("/v1/embeddings", json={"input": "x", "prompt_name": "nope"}), 400, "prompt_name")
        assert "query" in error["message"]  # lists the model's prompts
