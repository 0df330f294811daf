"""The client libraries people point at an OpenAI-compatible server, run for real against ``sentemb serve``
on loopback with the default model: LangChain, LlamaIndex and litellm (each skipped only where its
package is missing; the ``test`` extra installs LangChain and LlamaIndex)."""

from __future__ import annotations

import gc

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")

from sentemb.server import ServerSettings, serve_in_background

# The clients keep their HTTP connections open and never close them: collected here, not in a later test.
pytestmark = [pytest.mark.clients, pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]
KEY = "client-key"
MODEL = "all-MiniLM-L6-v2"
TEXTS = ["The weather is lovely today.", "He drove to the stadium."]


@pytest.fixture(autouse=True)
def _collect_the_clients():
    yield
    gc.collect()


@pytest.fixture(scope="module")
def url(default_encoder):
    with serve_in_background(default_encoder, ServerSettings(port=0, api_key=KEY, drain_seconds=0)) as base:
        yield base


@pytest.fixture
def no_tiktoken_download(monkeypatch, tmp_path):
    """tiktoken finds no cached encoding and cannot download one: only loopback names resolve."""
    import socket

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-tiktoken-cache"))
    resolve = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: the network is blocked in this test")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)


def test_langchain_openai_embeddings(url, default_encoder, no_tiktoken_download):
    langchain_openai = pytest.importorskip("langchain_openai")
    # The README's setting, as written: LangChain sends the texts and never needs tiktoken, so it works offline.
    embeddings = langchain_openai.OpenAIEmbeddings(
        model=MODEL, base_url=f"{url}/v1", api_key=KEY, check_embedding_ctx_length=False
    )
    np.testing.assert_allclose(embeddings.embed_documents(TEXTS), default_encoder.encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(embeddings.embed_query(TEXTS[0]), default_encoder.encode(TEXTS[0])[0], atol=1e-5)
    # LangChain's default first downloads tiktoken's cl100k_base to count tokens: blocked here, as offline.
    # Where this process already holds the encoding (litellm ships one), it sends token ids instead, which
    # the server refuses naming the README's setting.
    import openai

    default = langchain_openai.OpenAIEmbeddings(model=MODEL, base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    with pytest.raises((OSError, openai.BadRequestError), match=r"cl100k_base|check_embedding_ctx_length=False"):
        default.embed_documents(TEXTS)


def test_token_id_arrays_name_the_langchain_setting(url):
    for tokens in ([464, 9282, 374], [[464, 9282], [374]]):  # what LangChain sends by default
        response = httpx.post(
            f"{url}/v1/embeddings", json={"input": tokens, "model": MODEL}, headers={"Authorization": f"Bearer {KEY}"}
        )
        assert response.status_code == 400
        assert "check_embedding_ctx_length=False" in response.json()["error"]["message"]


def test_llama_index_openai_embedding(url, default_encoder):
    openai_embedding = pytest.importorskip("llama_index.embeddings.openai")
    model = openai_embedding.OpenAIEmbedding(model_name=MODEL, api_base=f"{url}/v1", api_key=KEY, max_retries=0)
    np.testing.assert_allclose(model.get_text_embedding_batch(TEXTS), default_encoder.encode(TEXTS), atol=1e-5)


def test_llama_index_openai_like_embedding(url, default_encoder):
    openai_like = pytest.importorskip("llama_index.embeddings.openai_like")
    model = openai_like.OpenAILikeEmbedding(model_name=MODEL, api_base=f"{url}/v1", api_key=KEY, max_retries=0)
    np.testing.assert_allclose(model.get_query_embedding(TEXTS[1]), default_encoder.encode(TEXTS[1])[0], atol=1e-5)


def test_litellm_with_the_openai_prefix(url, default_encoder, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of its price list at import
    litellm = pytest.importorskip("litellm")
    response = litellm.embedding(model=f"openai/{MODEL}", input=TEXTS, api_base=f"{url}/v1", api_key=KEY)
    got = [item["embedding"] for item in response.data]
    np.testing.assert_allclose(got, default_encoder.encode(TEXTS), atol=1e-5)
