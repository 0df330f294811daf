"""Prompts and the model's similarity function in the CLI; a lone surrogate in a batch job's JSONL."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.fs as pafs
import pytest

import sentemb
from cli_helpers import invoke
from st_shapes import SHAPES, build_st_folder
from tiny_models import build_tiny_model

TEXTS = ["A man is playing a guitar.", "Two dogs run on the beach."]


@pytest.fixture(scope="module")
def e5_like(tmp_path_factory):
    """Dense head, e5-style prompts ("query: " by default) and manhattan similarity."""
    root = tmp_path_factory.mktemp("st-cli")
    backbone = build_tiny_model("bert", root / "bert")
    options = {"default_prompt_name": "query", "similarity_fn_name": "manhattan"}
    return build_st_folder(backbone, SHAPES["dense_tanh"], root / "model", **options)


def _npy(tmp_path, *args):
    out = tmp_path / "out.npy"
    invoke("encode", *[arg for text in TEXTS for arg in ("--text", text)], "-o", str(out), "-f", *args)
    return np.load(out)


def test_encode_takes_a_prompt_name_or_a_prompt(e5_like, tmp_path):
    encoder = sentemb.load(e5_like, device="cpu")
    model = ("--model", str(e5_like), "--device", "cpu")
    np.testing.assert_allclose(_npy(tmp_path, *model), encoder.encode(TEXTS), atol=2e-5)  # the default: "query"
    passage = _npy(tmp_path, *model, "--prompt-name", "passage")
    np.testing.assert_allclose(passage, encoder.encode(TEXTS, prompt_name="passage"), atol=2e-5)
    custom = _npy(tmp_path, *model, "--prompt", "Represent: ")
    np.testing.assert_allclose(custom, encoder.encode(TEXTS, prompt="Represent: "), atol=2e-5)
    result = invoke("encode", "--text", "x", "-o", str(tmp_path / "x.npy"), *model, "--prompt-name", "nope", code=2)
    assert "prompt_name='nope' is not one of this model's prompts" in result.stderr


def test_similarity_uses_the_models_function(e5_like):
    encoder = sentemb.load(e5_like, device="cpu")
    vectors = encoder.encode(TEXTS)
    out = invoke("similarity", *TEXTS, "--model", str(e5_like), "--device", "cpu").output.strip()
    want = float(encoder.similarity(vectors, vectors)[0, 1])
    assert want < 0 and abs(float(out) - want) <= 1e-3  # a negated manhattan distance, not a cosine


def test_search_prompts_queries_and_corpus_separately(e5_like, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["A guitar is being played.", "Dogs at the sea.", "A bowl of soup."]) + "\n")
    encoder = sentemb.load(e5_like, device="cpu")
    common = ("--corpus", str(corpus), "--model", str(e5_like), "--device", "cpu", "--format", "jsonl")

    def scores(*args):
        lines = invoke("search", "guitar music", *common, *args).output.splitlines()
        return [json.loads(line)["score"] for line in lines]

    queries = encoder.encode_query(["guitar music"])
    docs = encoder.encode_document(corpus.read_text().splitlines())
    want = np.sort(encoder.similarity(queries, docs)[0])[::-1]
    np.testing.assert_allclose(scores(), want, atol=1e-3)  # query prompt "query: ", corpus "document" (""), manhattan
    passages = encoder.encode(corpus.read_text().splitlines(), prompt_name="passage")
    want = np.sort(encoder.similarity(queries, passages)[0])[::-1]
    np.testing.assert_allclose(scores("--corpus-prompt-name", "passage"), want, atol=1e-3)
    plain = encoder.encode(["guitar music"], prompt="")
    want = np.sort(sentemb.cos_sim(plain, docs)[0])[::-1]
    np.testing.assert_allclose(scores("--query-prompt", "", "--score", "cosine"), want, atol=1e-4)


def test_a_lone_surrogate_in_jsonl_is_a_bad_row_not_a_failed_shard(tmp_path):
    from sentemb.batch.io import read_shard
    from sentemb.batch.shards import Shard

    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": "bad \\ud800 text"}\n', encoding="utf-8")
    size = path.stat().st_size
    shard = Shard("part-0.parquet", str(path), "jsonl", 0, size, size)
    rows = read_shard(pafs.LocalFileSystem(), shard, "id", "text", [])
    assert rows.texts == ["fine"]
    (bad,) = rows.bad
    assert bad.id == "b" and "character 4 is a lone surrogate (U+D800)" in bad.error
