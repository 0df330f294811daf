"""The rerank clients people already use, run for real against ``sentemb serve --reranker`` on loopback:
the cohere SDK (v1 and v2 clients), LangChain's CohereRerank and LlamaIndex's CohereRerank, each with
``base_url`` as its only setting (the README's lines)."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import sentemb
from tiny_models import build_tiny_cross_encoder

pytest.importorskip("fastapi")

from sentemb.server import ServerSettings, serve_in_background

# The clients keep their HTTP connections open and never close them: collected here, not in a later test.
pytestmark = [pytest.mark.clients, pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]
KEY = "client-key"
QUERY = "capital of France"
DOCS = ["Paris is the capital of France.", "Cats sleep a lot.", "The Eiffel Tower is in Paris.", "Bread and butter."]


@pytest.fixture(autouse=True)
def _collect_the_clients():
    yield
    gc.collect()


@pytest.fixture(scope="module")
def reranker(tmp_path_factory):
    folder = build_tiny_cross_encoder("bert", tmp_path_factory.mktemp("clients") / "msmarco", activation="identity")
    return sentemb.load_reranker(str(folder), device="cpu")


@pytest.fixture(scope="module")
def url(default_encoder, reranker):
    settings = ServerSettings(port=0, api_key=KEY, drain_seconds=0)
    with serve_in_background(default_encoder, settings, rerankers=[reranker]) as base:
        yield base


def best(reranker, k=2):
    return [(hit.corpus_id, hit.score) for hit in reranker.rank(QUERY, DOCS, top_k=k)]


@pytest.mark.parametrize("version", ["Client", "ClientV2"])
def test_cohere_sdk(url, reranker, version):
    cohere = pytest.importorskip("cohere")
    client = getattr(cohere, version)(api_key=KEY, base_url=url)
    results = client.rerank(model="msmarco", query=QUERY, documents=DOCS, top_n=2).results
    got = [(r.index, r.relevance_score) for r in results]
    assert [i for i, _ in got] == [i for i, _ in best(reranker)]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in best(reranker)], atol=1e-6)


def test_langchain_cohere_rerank(url, reranker):
    langchain_cohere = pytest.importorskip("langchain_cohere")
    from langchain_core.documents import Document

    rerank = langchain_cohere.CohereRerank(model="msmarco", cohere_api_key=KEY, base_url=url, top_n=2)
    kept = rerank.compress_documents([Document(page_content=text) for text in DOCS], QUERY)
    assert [doc.page_content for doc in kept] == [DOCS[i] for i, _ in best(reranker)]
    np.testing.assert_allclose([doc.metadata["relevance_score"] for doc in kept], [s for _, s in best(reranker)],
                               atol=1e-6)  # fmt: skip


def test_llama_index_cohere_rerank(url, reranker):
    cohere_rerank = pytest.importorskip("llama_index.postprocessor.cohere_rerank")
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    rerank = cohere_rerank.CohereRerank(model="msmarco", api_key=KEY, base_url=url, top_n=2)
    given = [NodeWithScore(node=TextNode(text=text)) for text in DOCS]
    nodes = rerank.postprocess_nodes(given, query_bundle=QueryBundle(QUERY))
    assert [node.node.get_content() for node in nodes] == [DOCS[i] for i, _ in best(reranker)]
    np.testing.assert_allclose([node.score for node in nodes], [s for _, s in best(reranker)], atol=1e-6)
