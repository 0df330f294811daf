"""`sentemb similarity`, `search`, `eval sts` and `info`: argument, file and stdin input, outputs, bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import sentemb
from cli_helpers import cached_loads, invoke

pytestmark = pytest.mark.usefixtures(cached_loads.__name__)

PAIR = ["A man is eating food.", "A man is eating a meal."]
CORPUS = ["A man is eating pasta.", "The cat sleeps on the sofa.", "Stocks fell sharply on Monday.",
          "A woman plays the violin.", "Someone is cooking dinner."]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_similarity_of_two_texts_prints_the_library_score(default_encoder):
    result = invoke("similarity", *PAIR)
    want = float(sentemb.cos_sim(*default_encoder.encode(PAIR))[0, 0])
    assert float(result.stdout) == pytest.approx(want, abs=1e-4)


def test_similarity_of_a_file_and_of_stdin_lists_every_pair(tmp_path, default_encoder):
    (tmp_path / "t.txt").write_text("\n".join(CORPUS))
    scores = sentemb.cos_sim(*(2 * [default_encoder.encode(CORPUS)]))
    for args, stdin in ((["--file", str(tmp_path / "t.txt")], None), (["--file", "-"], "\n".join(CORPUS))):
        result = invoke("similarity", *args, "--format", "jsonl", input=stdin)
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(rows) == len(CORPUS) * (len(CORPUS) - 1) // 2
        for row in rows:
            assert row["score"] == pytest.approx(float(scores[row["i"], row["j"]]), abs=1e-4)
            assert row["text_i"] == CORPUS[row["i"]]


def test_similarity_tsv_when_piped_and_heatmap(tmp_path):
    png = tmp_path / "heat.png"
    result = invoke("similarity", *CORPUS[:3], "--heatmap", str(png))
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["i", "j", "text_i", "text_j", "score"]
    assert len(lines) == 1 + 3
    assert png.read_bytes()[:8] == PNG_MAGIC
    invoke("similarity", *CORPUS[:3], "--heatmap", str(png), code=4)  # exists: needs --force


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["only one"], 1, "at least two"),
        (["--file", "{tmp}/missing.txt"], 1, "no such file"),
        (["a", "b", "--file", "{tmp}/t.txt"], 2, "not both"),
        (["--file", "{tmp}/t.txt", "--heatmap", "{tmp}/h.png"], 1, "up to 60"),
    ],
)
def test_similarity_bad_input(tmp_path, args, code, needle):
    (tmp_path / "t.txt").write_text("\n".join(f"text {i}" for i in range(61)))
    result = invoke("similarity", *[a.format(tmp=tmp_path) for a in args], code=code)
    assert needle in result.stderr


def expected_hits(encoder, queries, k):
    return sentemb.semantic_search(encoder.encode(queries), encoder.encode(CORPUS), k)


def test_search_query_arguments_against_a_corpus_file(tmp_path, default_encoder):
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"doc": f"d{i}", "text": t}) for i, t in enumerate(CORPUS)))
    queries = ["what is for dinner?", "music"]
    result = invoke("search", *queries, "--corpus", str(tmp_path / "c.jsonl"), "--id-field", "doc", "-k", "2")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    want = expected_hits(default_encoder, queries, 2)
    assert [(r["query"], r["rank"]) for r in rows] == [(q, r) for q in queries for r in (1, 2)]
    for row, hit in zip(rows, [h for hits in want for h in hits], strict=True):
        assert row["id"] == f"d{hit.corpus_id}"
        assert row["text"] == CORPUS[hit.corpus_id]
        assert row["score"] == pytest.approx(hit.score, abs=1e-4)


@pytest.mark.parametrize("saved", ["npy", "parquet", "jsonl"])
def test_search_queries_from_file_and_stdin_against_saved_embeddings(tmp_path, default_encoder, saved):
    (tmp_path / "c.txt").write_text("\n".join(CORPUS))
    vectors = tmp_path / f"c.{saved}"
    invoke("encode", str(tmp_path / "c.txt"), "-o", str(vectors))
    (tmp_path / "q.txt").write_text("cooking\n")
    want = expected_hits(default_encoder, ["cooking"], 3)[0]
    for args, stdin in ((["--queries", str(tmp_path / "q.txt")], None), (["--queries", "-"], "cooking\n")):
        result = invoke("search", *args, "--embeddings", str(vectors), "-k", "3", "--format", "jsonl", input=stdin)
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert [r["id"] for r in rows] == [hit.corpus_id for hit in want]
        assert "text" not in rows[0]
    both = invoke("search", "cooking", "--embeddings", str(vectors), "--corpus", str(tmp_path / "c.txt"), "-k", "1",
                  "--format", "jsonl")
    assert json.loads(both.stdout)["text"] == CORPUS[want[0].corpus_id]


def test_search_bad_input(tmp_path):
    (tmp_path / "c.txt").write_text("\n".join(CORPUS))
    np.save(tmp_path / "wrong.npy", np.zeros((3, 10), dtype=np.float32))
    result = invoke("search", "q", "--embeddings", str(tmp_path / "wrong.npy"), code=1)
    assert "10 numbers" in result.stderr
    result = invoke("search", "q", "--embeddings", str(tmp_path / "wrong.npy"), "--corpus", str(tmp_path / "c.txt"),
                    code=1)
    assert "5 texts" in result.stderr
    assert "one of them" in invoke("search", "--corpus", str(tmp_path / "c.txt"), code=2).stderr
    assert "no such file" in invoke("search", "q", "--corpus", str(tmp_path / "nope.txt"), code=1).stderr


def test_eval_sts_matches_the_library_and_plots(tmp_path, sts_dev_path, default_encoder):
    small = tmp_path / "sts.csv"
    small.write_text("".join(sts_dev_path.read_text(encoding="utf-8").splitlines(keepends=True)[:60]))
    data = sentemb.read_sts(small)
    want = sentemb.evaluate_sts(default_encoder, data.sentences1, data.sentences2, data.scores)
    result = invoke("eval", "sts", str(small), "--json", "--plot", str(tmp_path / "sts.png"))
    got = json.loads(result.stdout)
    assert got["n"] == 60
    assert got["spearman"] == pytest.approx(want.spearman, abs=0.05)
    assert got["pearson"] == pytest.approx(want.pearson, abs=0.05)
    assert (tmp_path / "sts.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no such file"),
        ("a\tb\tc\n", "expected at least 7"),
        ("", "at least two"),
        (b"g\tf\t2012\t1\t5.0\tok \xff\tfine\n", "not valid UTF-8"),
    ],
    ids=["missing", "bad-layout", "empty", "utf8"],
)
def test_eval_sts_bad_input(tmp_path, content, needle):
    path = tmp_path / "sts.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert needle in invoke("eval", "sts", str(path), code=1).stderr


def test_info_shows_the_model_facts(default_encoder, default_model_dir):
    facts = json.loads(invoke("info", "--json").stdout)
    assert facts["dim"] == default_encoder.dim
    assert facts["pooling"] == "mean"
    assert facts["normalize"] is True
    assert facts["max_length"] == default_encoder.max_length
    assert facts["model_type"] == "bert"
    assert facts["sha256"] == default_encoder.describe().sha256
    assert "tokenizer.json" in facts["files"]
    positional = json.loads(invoke("info", str(default_model_dir), "--json").stdout)
    assert positional["source"] == "local"
    assert positional["sha256"] == facts["sha256"]
    text = invoke("info", "--max-length", "128").stdout
    assert re.search(r"^max_length +128$", text, re.M)


def test_info_unknown_model():
    assert "no-such-model-anywhere" in invoke("info", "no-such-model-anywhere", code=3).stderr
    assert "two models" in invoke("info", "a", "--model", "b", code=2).stderr
