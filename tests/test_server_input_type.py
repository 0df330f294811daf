"""A request's ``input_type`` over HTTP: "query" / "search_query" encodes as the library's encode_query does
(the task's prompt unless prompt_name is given, and an inference-free sparse model's query route),
"document" / "search_document" as encode_document; anything else is a 400 naming the field.

Served vectors are compared with sentence-transformers' own encode_query / encode_document on tiny random
models (a dense model with prompts, and a Router whose query route is a SparseStaticEmbedding)."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tiny_models import build_tiny_inference_free, build_tiny_model, sentence_transformer

pytest.importorskip("fastapi")

from sentemb.server import ServerSettings, serve_in_background

TEXTS = ["The cat sat on the mat.", "A dog barked at the postman and the cat ran."]
PROMPTS = {"query": "query: ", "passage": "passage: ", "title": "title: "}
ROUTER_PROMPTS = {"query": "find: ", "document": "doc: "}


def _with_prompts(folder, prompts: dict[str, str]):
    """``folder`` with ``prompts`` in its config_sentence_transformers.json (both libraries read it there)."""
    path = folder / "config_sentence_transformers.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**config, "prompts": prompts, "default_prompt_name": None}))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("input-type")
    dense = _with_prompts(build_tiny_model("bert", root / "tiny-dense", max_seq_length=32), PROMPTS)
    router = _with_prompts(build_tiny_inference_free(root / "tiny-router", max_seq_length=32, seed=3), ROUTER_PROMPTS)
    return {"dense": dense, "router": router}


@pytest.fixture(scope="module")
def client(folders):
    import sentemb

    dense = sentemb.load(str(folders["dense"]), device="cpu")
    router = sentemb.load_sparse(str(folders["router"]), device="cpu")
    served = serve_in_background(dense, ServerSettings(port=0, drain_seconds=0), sparse_models=[router])
    with served as url, httpx.Client(base_url=url, timeout=60) as c:
        yield c


def _sparse_reference(folder, method: str, **kwargs) -> np.ndarray:
    from sentence_transformers import SparseEncoder

    return getattr(SparseEncoder(str(folder), device="cpu"), method)(TEXTS, **kwargs).to_dense().numpy()


def _same_sparse(pairs_by_row: list[list[tuple[int, float]]], reference: np.ndarray) -> None:
    assert len(pairs_by_row) == len(reference)
    for row, pairs in zip(reference, pairs_by_row, strict=True):
        ids = [i for i, _ in pairs]
        assert ids == np.flatnonzero(row).tolist()
        np.testing.assert_allclose([v for _, v in pairs], row[ids], atol=1e-5, rtol=0)


def _tei(client: httpx.Client, **extra) -> list[list[tuple[int, float]]]:
    response = client.post("/embed_sparse", json={"inputs": TEXTS, "model": "tiny-router", **extra})
    assert response.status_code == 200, response.text
    return [[(p["index"], p["value"]) for p in row] for row in response.json()]


def _v1(client: httpx.Client, model: str, **extra) -> list[dict]:
    response = client.post("/v1/embeddings", json={"input": TEXTS, "model": model, **extra})
    assert response.status_code == 200, response.text
    return response.json()["data"]


@pytest.mark.parametrize(("input_type", "method"), [("query", "encode_query"), ("search_query", "encode_query"),
                         ("document", "encode_document"), ("search_document", "encode_document")])  # fmt: skip
def test_a_sparse_router_answers_as_encode_query_and_encode_document(client, folders, input_type, method):
    reference = _sparse_reference(folders["router"], method)
    _same_sparse(_tei(client, input_type=input_type), reference)
    rows = _v1(client, "tiny-router", input_type=input_type)
    _same_sparse([list(zip(r["indices"], r["values"], strict=True)) for r in rows], reference)


def test_the_query_route_differs_from_the_default_and_a_prompt_name_still_wins(client, folders):
    assert _tei(client, input_type="query") != _tei(client)  # the query lookup, not the MLM
    reference = _sparse_reference(folders["router"], "encode_query", prompt_name="document")
    _same_sparse(_tei(client, input_type="query", prompt_name="document"), reference)


@pytest.mark.parametrize(("input_type", "method"), [("query", "encode_query"), ("search_document", "encode_document")])
def test_a_dense_models_task_prompts_are_the_librarys(client, folders, input_type, method):
    st = sentence_transformer(folders["dense"])
    served = np.array([row["embedding"] for row in _v1(client, "tiny-dense", input_type=input_type)])
    np.testing.assert_allclose(served, getattr(st, method)(TEXTS), atol=1e-5, rtol=0)
    explicit = np.array([row["embedding"] for row in _v1(client, "tiny-dense", input_type=input_type,
                                                          prompt_name="title")])  # fmt: skip
    np.testing.assert_allclose(explicit, getattr(st, method)(TEXTS, prompt_name="title"), atol=1e-5, rtol=0)
    assert not np.allclose(served, explicit)


@pytest.mark.parametrize("value", ["passage", "QUERY", "", "classification"])
@pytest.mark.parametrize(("path", "body"), [("/v1/embeddings", {"input": TEXTS}),
                         ("/v1/embeddings", {"input": TEXTS, "model": "tiny-router"}),
                         ("/embed_sparse", {"inputs": TEXTS})])  # fmt: skip
def test_an_unknown_input_type_is_a_400_naming_the_accepted_values(client, path, body, value):
    response = client.post(path, json={**body, "input_type": value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "input_type"
    assert all(f"'{name}'" in error["message"] for name in ("query", "document", "search_query", "search_document"))
