"""Rerankers served beside the embedding model: Cohere's / Jina's /v1/rerank and /v2/rerank, TEI's /rerank
and /tokenize, the model list; scores equal the library's, every error is one JSON error naming its field."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

import sentemb
from tiny_models import build_tiny_cross_encoder

pytest.importorskip("fastapi")

from sentemb.server import ServerSettings, serve_in_background

KEY = "rerank-key"
QUERY = "capital of France"
DOCS = ["Paris is the capital of France.", "Berlin is the capital of Germany.", "Cats sleep a lot.",
        "The Eiffel Tower is in Paris.", "Bread needs flour, water and yeast."]  # fmt: skip
SETTINGS = ServerSettings(port=0, api_key=KEY, max_inputs=8, drain_seconds=0)


@pytest.fixture(scope="module")
def rerankers(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    logits = build_tiny_cross_encoder("bert", root / "msmarco", activation="identity", seed=7, max_length=32)
    sigmoid = build_tiny_cross_encoder("roberta", root / "sigmoid", seed=8, max_length=32)
    return [sentemb.load_reranker(str(logits), device="cpu"), sentemb.load_reranker(str(sigmoid), device="cpu")]


@pytest.fixture(scope="module")
def server(default_encoder, rerankers):
    with serve_in_background(default_encoder, SETTINGS, rerankers=rerankers) as url:
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


@pytest.mark.parametrize("route", ["/v1/rerank", "/v2/rerank"])
def test_cohere_route_gives_the_libraries_ranking(client, rerankers, route):
    body = {"model": "msmarco", "query": QUERY, "documents": DOCS, "top_n": 3, "return_documents": True}
    answer = client.post(route, json=body).json()
    hits = rerankers[0].rank(QUERY, DOCS, top_k=3)
    assert [r["index"] for r in answer["results"]] == [hit.corpus_id for hit in hits]
    np.testing.assert_allclose([r["relevance_score"] for r in answer["results"]], [hit.score for hit in hits],
                               atol=1e-6)  # fmt: skip
    assert [r["document"]["text"] for r in answer["results"]] == [DOCS[hit.corpus_id] for hit in hits]
    assert answer["model"] == "msmarco" and answer["meta"]["billed_units"] == {"search_units": 1}
    assert answer["usage"]["total_tokens"] == sum(info.num_tokens for info in
                                                  rerankers[0].predict_with_info([(QUERY, d) for d in DOCS]).info)


def test_documents_may_be_objects_and_the_default_model_is_the_first(client, rerankers):
    answer = client.post("/v1/rerank", json={"query": QUERY, "documents": [{"text": d} for d in DOCS]}).json()
    assert len(answer["results"]) == len(DOCS) and "document" not in answer["results"][0]
    scores = rerankers[0].predict([(QUERY, d) for d in DOCS])
    np.testing.assert_allclose(sorted((r["relevance_score"] for r in answer["results"]), reverse=True),
                               sorted(scores, reverse=True), atol=1e-6)  # fmt: skip


def test_tei_rerank_with_and_without_the_activation(client, rerankers):
    texts = DOCS[:3]
    answer = client.post("/rerank", json={"model": "sigmoid", "query": QUERY, "texts": texts, "return_text": True})
    scores = rerankers[1].predict([(QUERY, t) for t in texts])
    order = np.argsort(-scores, kind="stable")
    assert [(r["index"], r["text"]) for r in answer.json()] == [(i, texts[i]) for i in order]
    np.testing.assert_allclose([r["score"] for r in answer.json()], np.sort(scores)[::-1], atol=1e-6)
    raw = client.post("/rerank", json={"model": "sigmoid", "query": QUERY, "texts": texts, "raw_scores": True}).json()
    logits = rerankers[1].predict([(QUERY, t) for t in texts], activation="identity")
    np.testing.assert_allclose(sorted(r["score"] for r in raw), sorted(logits), atol=1e-6)


def test_tei_refuses_a_pair_over_the_length_unless_told_to_truncate(client):
    long = "The quick brown fox jumps over the lazy dog. " * 20
    error_of(client.post("/rerank", json={"query": QUERY, "texts": ["short", long]}), 413, "texts")
    cut = client.post("/rerank", json={"query": QUERY, "texts": ["short", long], "truncate": True})
    assert cut.status_code == 200 and len(cut.json()) == 2


def test_tokenize_counts_agree_with_usage(client):
    text = "The weather is lovely today."
    usage = client.post("/v1/embeddings", json={"input": [text]}).json()["usage"]["prompt_tokens"]
    plain = client.post("/tokenize", json={"inputs": text, "add_special_tokens": False}).json()
    assert len(plain) == 1 and len(plain[0]) == usage and not any(t["special"] for t in plain[0])
    assert "".join(text[t["start"] : t["stop"]] for t in plain[0]).replace(" ", "") == text.replace(" ", "")
    special = client.post("/tokenize", json={"inputs": [text, "hi"]}).json()
    assert special[0][0]["special"] and special[0][0]["text"] == "[CLS]" and len(special[0]) == usage + 2
    reranker = client.post("/tokenize", json={"inputs": "hi", "model": "sigmoid"}).json()
    assert reranker[0][0]["text"] == "<s>"


def test_models_lists_every_model_with_its_kind_and_limits(client):
    cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
    assert cards["msmarco"]["kind"] == cards["sigmoid"]["kind"] == "rerank"
    embedding = [card for card in cards.values() if card["kind"] == "embedding"]
    assert len(embedding) == 1 and embedding[0]["max_input_tokens"] == 256
    assert cards["msmarco"]["max_input_tokens"] == 32 and cards["msmarco"]["max_inputs"] == 8
    assert client.get("/v1/models/sigmoid").json()["kind"] == "rerank"


@pytest.mark.parametrize(
    ("body", "status", "param", "needle"),
    [
        ({"query": QUERY, "documents": ["ok", 3]}, 400, "documents", "documents[1]"),
        ({"query": QUERY, "documents": ["ok", {"title": "x"}]}, 400, "documents", "documents[1]"),
        ({"query": QUERY, "documents": []}, 400, "documents", "empty"),
        ({"query": QUERY, "documents": ["d"] * 9}, 413, "documents", "at most 8"),
        ({"query": QUERY, "documents": ["d"], "model": "nope"}, 404, "model", "does not exist"),
        ({"query": QUERY, "documents": ["d"], "model": "all-MiniLM-L6-v2"}, 400, "model", "/v1/embeddings"),
        ({"query": QUERY, "documents": ["d"], "top_n": 0}, 400, "top_n", "at least 1"),
        ({"documents": ["d"]}, 400, "query", "required"),
    ],
)
def test_every_bad_request_is_one_error_naming_its_field(client, body, status, param, needle):
    assert needle in error_of(client.post("/v1/rerank", json=body), status, param)["message"]


def test_a_lone_surrogate_in_a_document_or_the_query_is_a_400_not_a_500(client):
    raw = '{"query": "q", "documents": ["fine", "bad \\ud800"]}'
    response = client.post("/v1/rerank", content=raw, headers={"Content-Type": "application/json"})
    assert "documents[1]" in error_of(response, 400, "documents")["message"]
    for route, body in (("/v1/rerank", '{"query": "q \\ud800", "documents": ["fine"]}'),
                        ("/rerank", '{"query": "q \\ud800", "texts": ["fine"]}')):  # fmt: skip
        response = client.post(route, content=body, headers={"Content-Type": "application/json"})
        assert "query is not valid Unicode" in error_of(response, 400, "query")["message"]


def test_a_reranker_name_on_the_embeddings_route_points_to_rerank(client):
    assert "/v1/rerank" in error_of(client.post("/v1/embeddings", json={"model": "msmarco", "input": "x"}), 400,
                                    "model")["message"]  # fmt: skip


def test_the_api_key_guards_the_rerank_routes(server):
    for route in ("/v1/rerank", "/rerank", "/tokenize"):
        assert httpx.post(f"{server}{route}", json={"query": "q", "documents": ["d"]}).status_code == 401


def test_metrics_count_pairs_per_reranker(client):
    client.post("/v1/rerank", json={"model": "sigmoid", "query": QUERY, "documents": DOCS[:2]})
    text = client.get("/metrics").text
    line = next(line for line in text.splitlines() if line.startswith('sentemb_rerank_pairs_total{model="sigmoid"}'))
    assert float(line.split()[-1]) >= 2
    assert "route=\"/v1/rerank\"" in text


def test_a_reranker_with_several_labels_is_refused_at_start(default_encoder, tmp_path):
    from sentemb.server import create_app

    nli = sentemb.load_reranker(str(build_tiny_cross_encoder("bert", tmp_path / "nli", labels=3)), device="cpu")
    with pytest.raises(sentemb.ConfigError, match="one-label"):
        create_app(default_encoder, SETTINGS, [nli])


def test_requests_from_many_threads_get_their_own_scores(client, rerankers):
    from concurrent.futures import ThreadPoolExecutor

    queries = [f"query number {i} about {word}" for i, word in enumerate(["cats", "bread", "Paris", "Berlin"] * 3)]

    def ask(query: str) -> list[float]:
        answer = client.post("/v1/rerank", json={"model": "msmarco", "query": query, "documents": DOCS}).json()
        return [r["relevance_score"] for r in sorted(answer["results"], key=lambda r: r["index"])]

    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(ask, queries))
    for query, scores in zip(queries, got, strict=True):
        np.testing.assert_allclose(scores, rerankers[0].predict([(query, d) for d in DOCS]), atol=1e-5)
    assert json.dumps(got)  # plain floats


def test_an_int8_reranker_with_rescoring_answers_in_fp32s_order(default_encoder, tmp_path, onnx_cache):
    folder = str(build_tiny_cross_encoder("bert", tmp_path / "rescored", activation="identity", seed=7, max_length=32))
    int8 = sentemb.load_reranker(folder, backend="onnx", precision="int8", device="cpu", rescore=True)
    fp32 = sentemb.load_reranker(folder, backend="onnx", device="cpu")
    with serve_in_background(default_encoder, SETTINGS, rerankers=[int8]) as url, \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:  # fmt: skip
        for top_n in (2, None):
            answer = c.post("/v1/rerank", json={"model": "rescored", "query": QUERY, "documents": DOCS, "top_n": top_n})
            hits = fp32.rank(QUERY, DOCS, top_k=top_n)
            assert [r["index"] for r in answer.json()["results"]] == [hit.corpus_id for hit in hits]
            np.testing.assert_allclose([r["relevance_score"] for r in answer.json()["results"]],
                                       [hit.score for hit in hits], atol=1e-6)  # fmt: skip
