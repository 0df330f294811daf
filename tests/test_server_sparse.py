"""Sparse models served beside the embedding model: TEI's /embed_sparse, sparse rows from /v1/embeddings,
the model list, /tokenize, metrics by model and route, and every error as one JSON error naming its field.

The sparse models are :class:`tests.fakes.FakeSparseEncoder` (the SparseEncoder's methods, lexical
vectors, a gate to hold the model), so admission and failures can be driven without a real SPLADE model."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from fakes import FakeBackend, FakeSparseEncoder, fake_encoder
from waiting import wait_until

pytest.importorskip("fastapi")

from sentemb.server import ServerSettings, serve_in_background

KEY = "sparse-key"
TEXTS = ["The cat sat on the mat.", "A dog barked at the postman and the cat ran."]
SETTINGS = ServerSettings(port=0, api_key=KEY, max_inputs=4, queue_size=6, drain_seconds=0)


@pytest.fixture(scope="module")
def models():
    prompted = FakeSparseEncoder("splade-a", prompts={"query": "query: "})
    return [prompted, FakeSparseEncoder("splade-b", max_length=8)]


@pytest.fixture(scope="module")
def server(models):
    with serve_in_background(fake_encoder(FakeBackend()), SETTINGS, sparse_models=models) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        yield c


def error_of(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def pairs(vector) -> list[dict]:
    return [
        {"index": int(i), "value": pytest.approx(float(v))} for i, v in zip(vector.indices, vector.values, strict=True)
    ]


def test_embed_sparse_gives_the_models_vectors_in_teis_shape(client, models):
    answer = client.post("/embed_sparse", json={"inputs": TEXTS}).json()
    expected = models[0].encode(TEXTS)
    assert answer == [pairs(vector) for vector in expected]
    assert all([p["index"] for p in row] == sorted(p["index"] for p in row) for row in answer)
    one = client.post("/embed_sparse", json={"inputs": TEXTS[0], "model": "splade-a"}).json()
    assert one == answer[:1]


def test_the_prompt_name_goes_before_each_text(client, models):
    answer = client.post("/embed_sparse", json={"inputs": TEXTS, "prompt_name": "query"}).json()
    assert answer == [pairs(vector) for vector in models[0].encode(TEXTS, prompt_name="query")]
    assert answer != client.post("/embed_sparse", json={"inputs": TEXTS}).json()


def test_v1_embeddings_answers_sparse_rows_for_a_sparse_model(client, models):
    response = client.post("/v1/embeddings", json={"model": "splade-a", "input": TEXTS})
    assert response.status_code == 200, response.text
    body = response.json()
    result = models[0].encode_with_info(TEXTS)
    assert body["model"] == "splade-a" and body["object"] == "list"
    for i, (row, vector) in enumerate(zip(body["data"], result.embeddings, strict=True)):
        assert row["object"] == "sparse_embedding" and row["index"] == i
        assert row["indices"] == vector.indices.tolist()
        np.testing.assert_allclose(row["values"], vector.values, rtol=1e-6)
    tokens = sum(min(item.num_tokens, models[0].max_length - 2) for item in result.info)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert response.headers["X-Truncated-Inputs"] == "0"
    dense = client.post("/v1/embeddings", json={"input": TEXTS}).json()  # the embedding model, as before
    assert dense["data"][0]["object"] == "embedding" and len(dense["data"][0]["embedding"]) == 4


def test_truncation_is_teis_rule_on_embed_sparse_and_a_header_on_v1(client, models):
    long = "the cat sat on the mat " * 10  # past splade-b's 8 tokens
    error = error_of(client.post("/embed_sparse", json={"inputs": ["short", long], "model": "splade-b"}), 413,
                     "inputs")  # fmt: skip
    assert "inputs[1]" in error["message"] and error["code"] == "context_length_exceeded"
    cut = client.post("/embed_sparse", json={"inputs": [long], "model": "splade-b", "truncate": True}).json()
    assert cut == [pairs(vector) for vector in models[1].encode([long])]
    v1 = client.post("/v1/embeddings", json={"model": "splade-b", "input": [long, "short"]})
    assert v1.status_code == 200 and v1.headers["X-Truncated-Inputs"] == "1"


def test_models_are_listed_with_their_kind_and_picked_by_name(client):
    cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
    assert cards["splade-a"]["kind"] == cards["splade-b"]["kind"] == "sparse"
    assert cards["splade-b"]["max_input_tokens"] == 8 and cards["splade-b"]["max_inputs"] == 4
    assert [card["kind"] for card in cards.values()].count("embedding") == 1
    assert client.get("/v1/models/splade-b").json()["kind"] == "sparse"
    dense_name = next(name for name, card in cards.items() if card["kind"] == "embedding")
    wrong = error_of(client.post("/embed_sparse", json={"inputs": "x", "model": dense_name}), 400, "model")
    assert wrong["code"] == "wrong_model_kind" and "/v1/embeddings" in wrong["message"]
    assert error_of(client.post("/embed_sparse", json={"inputs": "x", "model": "nope"}), 404, "model")
    assert error_of(client.post("/v1/rerank", json={"query": "q", "documents": ["d"]}), 404)  # no reranker here


@pytest.mark.parametrize(
    ("body", "status", "param", "named"),
    [
        ({"inputs": []}, 400, "inputs", "empty array"),
        ({"inputs": ["a", "b", "c", "d", "e"]}, 413, "inputs", "at most 4"),
        ({"inputs": ["a", 3]}, 400, "inputs", "inputs[1]"),
        ({"inputs": ["a", ""]}, 400, "inputs", "inputs[1]"),
        ({"inputs": ["a", "b\ud800"]}, 400, "inputs", "inputs[1]"),
        ({"inputs": "a", "prompt_name": "nope"}, 400, "prompt_name", "'query'"),
        ({"texts": ["a"]}, 400, "inputs", "inputs"),
        ({"inputs": "a", "truncate": "maybe"}, 400, "truncate", "truncate"),
    ],
)
def test_embed_sparse_refuses_a_bad_request_naming_the_field(client, body, status, param, named):
    import json

    response = client.post("/embed_sparse", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert named in error_of(response, status, param)["message"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"dimensions": 4}, "dimensions"), ({"encoding_format": "base64"}, "encoding_format"),
     ({"embedding_type": "int8"}, "embedding_type"), ({"input": ["a", ""]}, "input"),
     ({"prompt_name": "nope"}, "prompt_name")],
)  # fmt: skip
def test_v1_embeddings_refuses_what_a_sparse_model_cannot_answer(client, extra, param):
    response = client.post("/v1/embeddings", json={"model": "splade-a", "input": ["a"], **extra})
    error_of(response, 400, param)


def test_every_route_needs_the_key_and_bad_json_is_a_400(server):
    with httpx.Client(base_url=server, timeout=30) as anonymous:
        assert anonymous.post("/embed_sparse", json={"inputs": "x"}).status_code == 401
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
        assert error_of(client.post("/embed_sparse", content=b"{not json"), 400)["code"] == "invalid_json"


def test_tokenize_reads_with_the_sparse_models_tokenizer(client, models):
    tokens = client.post("/tokenize", json={"inputs": "a cat", "model": "splade-b", "add_special_tokens": False})
    assert [t["id"] for t in tokens.json()[0]] == models[1].tokenizer.encode("a cat", add_special_tokens=False).ids


def test_metrics_count_inputs_tokens_and_requests_by_model_and_route(client):
    def sample(text: str, name: str) -> float:
        line = next((line for line in text.splitlines() if line.startswith(name)), None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    key = 'sentemb_sparse_inputs_total{model="splade-b",route="/embed_sparse"}'
    before = client.get("/metrics").text
    assert (
        client.post("/embed_sparse", json={"inputs": TEXTS, "model": "splade-b", "truncate": True}).status_code == 200
    )
    assert client.post("/v1/embeddings", json={"input": TEXTS[:1], "model": "splade-b"}).status_code == 200
    after = client.get("/metrics").text
    assert sample(after, key) - sample(before, key) == 2
    v1 = 'sentemb_sparse_inputs_total{model="splade-b",route="/v1/embeddings"}'
    assert sample(after, v1) - sample(before, v1) == 1
    requests = 'sentemb_requests_total{method="POST",route="/embed_sparse",status="200"}'
    assert sample(after, requests) - sample(before, requests) == 1
    assert sample(after, 'sentemb_sparse_tokens_total{model="splade-b",route="/embed_sparse"}') > 0


def queue_behind_a_held_call(held, threads: list[threading.Thread], wait_for: Callable[[], None]) -> None:
    """Hold the model, start the first thread and wait until its call is in the model, start the others and
    ``wait_for()`` them to be where the test wants them, then release the model and join every thread."""
    held.hold()
    threads[0].start()
    assert held.entered.wait(30)
    for thread in threads[1:]:
        thread.start()
    wait_for()
    held.release()
    for thread in threads:
        thread.join(30)


def test_admission_refuses_past_the_queue_and_a_failing_model_fails_only_its_request(models):
    held = FakeSparseEncoder("held", fail_on_token=models[0].tokenizer.token_to_id("banana"))
    with serve_in_background(fake_encoder(FakeBackend()), SETTINGS, sparse_models=[held]) as url:
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        assert client.post("/embed_sparse", json={"inputs": "warm"}).status_code == 200
        answers: list[httpx.Response] = []
        refused = threading.Event()

        def send(texts: list[str]) -> None:
            answer = client.post("/embed_sparse", json={"inputs": texts})
            answers.append(answer)
            if answer.status_code == 429:
                refused.set()

        # with the first request in the model the queue is empty: 4 texts are admitted (queue_size 6), 4 are not
        def one_refused() -> None:
            assert refused.wait(30)

        threads = [threading.Thread(target=send, args=(texts,)) for texts in (TEXTS, ["a"] * 4, ["b"] * 4)]
        queue_behind_a_held_call(held, threads, one_refused)
        assert sorted(answer.status_code for answer in answers) == [200, 200, 429]
        busy = next(answer for answer in answers if answer.status_code == 429)
        assert error_of(busy, 429)["code"] == "rate_limit_exceeded" and int(busy.headers["Retry-After"]) >= 1
        # a request the model fails on, merged with a good one: the good one is answered
        answers.clear()
        threads = [threading.Thread(target=send, args=(texts,)) for texts in (["first"], ["an apple"], ["a banana"])]
        queue_behind_a_held_call(held, threads, lambda: wait_until(lambda: queued(client, "held") == 2, "two queued"))
        assert sorted(answer.status_code for answer in answers) == [200, 200, 500], [a.text for a in answers]
        assert error_of(max(answers, key=lambda a: a.status_code), 500)["code"] == "internal_error"
        assert any(sorted(call[0]) == ["a banana", "an apple"] for call in held.calls)  # merged, then split
        client.close()


def test_queries_and_documents_wait_for_micro_batches_of_their_own():
    """While the model is held, two query requests and a document request queue up; the queries share one
    model call with the query prompt, the document gets its own with the document prompt."""
    held = FakeSparseEncoder("held-types", prompts={"query": "query: ", "document": "doc: "})
    with serve_in_background(fake_encoder(FakeBackend()), SETTINGS, sparse_models=[held]) as url:
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        assert client.post("/embed_sparse", json={"inputs": "warm"}).status_code == 200
        answers: dict[str, list] = {}

        def send(text: str, input_type: str | None) -> None:
            body = {"inputs": [text]} if input_type is None else {"inputs": [text], "input_type": input_type}
            answers[text] = client.post("/embed_sparse", json=body).json()

        sent = [("first", None), ("an apple", "query"), ("a pear", "search_document"), ("a plum", "search_query")]
        threads = [threading.Thread(target=send, args=item) for item in sent]
        queue_behind_a_held_call(held, threads,
                                 lambda: wait_until(lambda: queued(client, "held-types") == 3, "three queued"))
        client.close()
    calls = sorted((str(prompt), sorted(items)) for items, prompt in held.calls if items[0] in answers)
    assert calls == [("None", ["first"]), ("document", ["a pear"]), ("query", ["a plum", "an apple"])]
    for text, prompt in (("an apple", "query"), ("a pear", "document"), ("a plum", "query")):
        assert answers[text] == [pairs(held.encode([text], prompt_name=prompt)[0])]


def queued(client: httpx.Client, model: str) -> float:
    """The sparse model's queue depth, as /metrics reports it."""
    name = f'sentemb_sparse_queue_inputs{{model="{model}"}}'
    line = next((x for x in client.get("/metrics").text.splitlines() if x.startswith(name)), None)
    return float(line.rsplit(" ", 1)[1]) if line else 0.0


def test_real_splade_models_are_served_with_the_librarys_vectors(tmp_path):
    import sentemb
    from tiny_models import build_tiny_cross_encoder, build_tiny_inference_free, build_tiny_splade

    splade = sentemb.load_sparse(str(build_tiny_splade("bert", tmp_path / "tiny-splade", max_seq_length=32)),
                                 device="cpu", max_active_dims=24)  # fmt: skip
    router = sentemb.load_sparse(str(build_tiny_inference_free(tmp_path / "tiny-router", max_seq_length=32)),
                                 device="cpu")  # fmt: skip
    reranker = sentemb.load_reranker(str(build_tiny_cross_encoder("bert", tmp_path / "tiny-ce", max_length=32)),
                                     device="cpu")  # fmt: skip
    settings = ServerSettings(port=0, drain_seconds=0)
    served = serve_in_background(fake_encoder(FakeBackend()), settings, sparse_models=[splade, router],
                                 rerankers=[reranker])  # fmt: skip
    with served as url, httpx.Client(base_url=url, timeout=60) as client:
        tei = client.post("/embed_sparse", json={"inputs": TEXTS, "model": "tiny-splade"}).json()
        v1 = client.post("/v1/embeddings", json={"input": TEXTS, "model": "tiny-router"}).json()
        kinds = {card["id"]: card["kind"] for card in client.get("/v1/models").json()["data"]}
        rerank = client.post("/v1/rerank", json={"query": "q", "documents": ["d"], "model": "tiny-splade"})
        embed = client.post("/embed_sparse", json={"inputs": "x", "model": "tiny-ce"})
    assert "/embed_sparse" in error_of(rerank, 400, "model")["message"]
    assert "/v1/rerank" in error_of(embed, 400, "model")["message"]
    assert tei == [pairs(vector) for vector in splade.encode(TEXTS)] and all(len(row) == 24 for row in tei)
    for row, vector in zip(v1["data"], router.encode(TEXTS), strict=True):
        assert row["indices"] == vector.indices.tolist()
        np.testing.assert_allclose(row["values"], vector.values, rtol=1e-6)
    assert kinds["tiny-splade"] == kinds["tiny-router"] == "sparse"


def test_sentemb_serve_loads_each_sparse_model_with_the_runtime_flags(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import sentemb.server
    from sentemb.cli import main
    from tiny_models import build_tiny_splade

    folder = build_tiny_splade("bert", tmp_path / "tiny-splade", max_seq_length=32)
    served: dict = {}
    monkeypatch.setattr(sentemb.server, "serve", lambda encoder, settings, **kw: served.update(kw, settings=settings))
    result = CliRunner().invoke(main, ["serve", "--sparse-model", str(folder), "--device", "cpu", "--max-length", "16",
                                        "--backend", "torch"])  # fmt: skip
    assert result.exit_code == 0, result.output
    (model,) = served["sparse_models"]
    assert type(model).__name__ == "SparseEncoder" and model.max_length == 16 and model.device == "cpu"
    assert served["settings"].sparse_models == (str(folder),)
