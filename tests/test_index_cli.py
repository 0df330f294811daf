"""`sentemb index build/search/info`: from .npy, Parquet (as `sentemb encode` writes it), a batch folder and texts."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sentemb
from cli_helpers import cached_loads, invoke

pytestmark = pytest.mark.usefixtures(cached_loads.__name__)

CORPUS = ["A man is eating pasta.", "The cat sleeps on the sofa.", "Stocks fell sharply on Monday.",
          "A woman plays the violin.", "Someone is cooking dinner.", "A dog runs across the park."]  # fmt: skip


def _jsonl(path, texts):
    path.write_text("\n".join(json.dumps({"doc": f"d{i}", "text": t}) for i, t in enumerate(texts)))
    return path


@pytest.mark.parametrize("output_type", ["float32", "int8", "binary"])
def test_build_from_encode_parquet_then_search_by_text(tmp_path, default_encoder, output_type):
    docs = _jsonl(tmp_path / "docs.jsonl", CORPUS)
    invoke("encode", str(docs), "--id-field", "doc", "-o", str(tmp_path / "docs.parquet"))
    result = invoke("index", "build", str(tmp_path / "docs.parquet"), "-o", str(tmp_path / "docs.index"),
                    "--output-type", output_type, "--rescore", "float" if output_type == "binary" else "codes",
                    "--expansion-add", "32", "--expansion-search", "100")  # fmt: skip
    assert "indexed 6 vectors of 384" in result.stderr
    out = invoke("index", "search", str(tmp_path / "docs.index"), "Who is making food?", "-k", "2",
                 "--format", "jsonl").stdout  # fmt: skip
    hits = [json.loads(line) for line in out.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["id"] in ("d0", "d4")
    index = sentemb.Index.load(tmp_path / "docs.index")
    assert index.model["sha256"] == default_encoder.describe().sha256 and index.options.output == output_type
    info = json.loads(invoke("index", "info", str(tmp_path / "docs.index")).stdout)
    assert info["count"] == 6 and info["model"]["model"] == index.model["model"]
    assert (info["options"]["expansion_add"], info["options"]["expansion_search"]) == (32, 100)


def test_build_from_texts_and_npy_give_the_same_index(tmp_path):
    docs = _jsonl(tmp_path / "docs.jsonl", CORPUS)
    invoke("index", "build", str(docs), "--id-field", "doc", "-o", str(tmp_path / "a.index"), "--exact", "-q")
    invoke("encode", str(docs), "-o", str(tmp_path / "docs.npy"))
    invoke("index", "build", str(tmp_path / "docs.npy"), "-o", str(tmp_path / "b.index"), "--exact", "-q")
    a, b = sentemb.Index.load(tmp_path / "a.index"), sentemb.Index.load(tmp_path / "b.index")
    assert a.ids.tolist() == [f"d{i}" for i in range(6)] and b.ids.tolist() == list(range(6))
    queries = np.asarray(a.store.get(np.arange(6)))
    assert a.search_rows(queries, 3)[0].tolist() == b.search_rows(queries, 3)[0].tolist()


def _batch_folder(tmp_path, vectors, sha="f" * 64):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "batch-out"
    folder.mkdir()
    header = {"model": "org/other", "sha256": {"model.safetensors": sha}, "dim": vectors.shape[1],
              "pooling": "mean", "normalize": True, "id_column": "key", "embedding_column": "vec"}  # fmt: skip
    (folder / "_manifest.json").write_text(json.dumps({"header": header, "complete": True}))
    for part, rows in enumerate((slice(0, 4), slice(4, None))):
        flat = pa.array(vectors[rows].reshape(-1))
        table = pa.table({"key": [f"k{i}" for i in range(len(vectors))][rows],
                          "vec": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})  # fmt: skip
        pq.write_table(table, folder / f"part-{part:05d}.parquet")
    (folder / "_errors.jsonl").write_text("")
    return folder


def test_build_from_a_batch_folder_records_its_model_and_refuses_other_queries(tmp_path, default_encoder):
    vectors = default_encoder.encode(CORPUS)
    folder = _batch_folder(tmp_path, vectors)
    invoke("index", "build", str(folder), "-o", str(tmp_path / "b.index"), "-q")
    index = sentemb.Index.load(tmp_path / "b.index")
    assert index.ids.tolist() == [f"k{i}" for i in range(6)] and index.model["model"] == "org/other"
    result = invoke("index", "search", str(tmp_path / "b.index"), "food", "--model", str(default_encoder.resolved.path),
                    code=3)  # fmt: skip
    assert "org/other" in result.stderr and "rebuild the index" in result.stderr


@pytest.mark.parametrize(
    ("case", "code", "needle"),
    [
        ("empty", 1, "no vectors"),
        ("dims", 1, "dimensions"),
        ("k", 2, "k=50 but the index holds 6"),
        ("corrupt", 1, "checksum"),
        ("not-an-index", 1, "not a sentemb index"),
        ("exists", 4, "already exists"),
        ("quantised-npy", 1, "float vectors"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, default_encoder, case, code, needle):
    np.save(tmp_path / "docs.npy", default_encoder.encode(CORPUS))
    invoke("index", "build", str(tmp_path / "docs.npy"), "-o", str(tmp_path / "ok.index"), "--exact", "-q")
    build = ["index", "build", str(tmp_path / "in.npy"), "-o", str(tmp_path / "new.index")]
    search = ["index", "search", str(tmp_path / "ok.index"), "food"]
    if case == "empty":
        np.save(tmp_path / "in.npy", np.zeros((0, 384), np.float32))
    elif case == "dims":
        np.save(tmp_path / "in.npy", np.ones((3, 10), np.float32))
    elif case == "quantised-npy":
        np.save(tmp_path / "in.npy", np.ones((3, 384), np.int8))
    elif case == "exists":
        build[-1] = str(tmp_path / "ok.index")
        build[2] = str(tmp_path / "docs.npy")
    args = build if case in ("empty", "dims", "exists", "quantised-npy") else search
    if case == "k":
        args += ["-k", "50"]
    elif case == "corrupt":
        (tmp_path / "ok.index" / "vectors.npy").write_bytes(b"\x93NUMPY" + b"\0" * 2000)
        stored = json.loads((tmp_path / "ok.index" / "index.json").read_text())
        stored["files"]["vectors.npy"]["bytes"] = 2006
        (tmp_path / "ok.index" / "index.json").write_text(json.dumps(stored))
    elif case == "not-an-index":
        args[2] = str(tmp_path)
    result = invoke(*args, code=code)
    assert needle in result.stderr


@pytest.mark.parametrize("command", [["index", "build"], ["dedup"], ["cluster"]], ids=" ".join)
def test_help_shows_examples_and_exit_codes(command):
    out = invoke(*command, "--help").stdout
    assert "Examples:" in out and f"sentemb {' '.join(command)}" in out and "Exit codes" in out


def test_top_level_help_lists_the_new_commands_without_importing_them():
    import subprocess
    import sys

    code = ("import sys\nfrom sentemb.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in sys.modules"
            " if m.startswith(('sentemb.retrieval', 'usearch', 'sklearn'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "LOADED []" in out
    for name in ("index", "dedup", "cluster"):
        assert f"\n  {name} " in out


def test_search_with_index_matches_index_search_and_shows_corpus_texts(tmp_path):
    docs = _jsonl(tmp_path / "docs.jsonl", CORPUS)
    invoke("index", "build", str(docs), "--id-field", "doc", "-o", str(tmp_path / "d.index"), "--output-type",
           "binary", "--exact", "-q")  # fmt: skip
    ask = ("Who is making food?", "-k", "3", "--format", "jsonl")
    theirs = [json.loads(line) for line in invoke("index", "search", str(tmp_path / "d.index"), *ask).stdout.split("\n")
              if line]  # fmt: skip
    ours = [json.loads(line) for line in invoke("search", *ask, "--index", str(tmp_path / "d.index")).stdout.split("\n")
            if line]  # fmt: skip
    # the same hits; scores to float32 rounding (`search` may embed the query with a cached ONNX export)
    assert [{**row, "score": None} for row in ours] == [{**row, "score": None} for row in theirs] and len(ours) == 3
    np.testing.assert_allclose([row["score"] for row in ours], [row["score"] for row in theirs], atol=1e-5)
    shown = invoke("search", *ask, "--index", str(tmp_path / "d.index"), "--corpus", str(docs), "--id-field", "doc")
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in ours]
    assert all(r["text"] == CORPUS[int(r["id"][1:])] for r in rows)
    tsv = invoke("search", *ask[:3], "--format", "tsv", "--index", str(tmp_path / "d.index")).stdout.splitlines()
    assert tsv[0].split("\t") == ["query", "rank", "id", "score"] and len(tsv) == 4


def test_search_with_index_refuses_another_model_and_mixed_sources(tmp_path, default_encoder):
    folder = _batch_folder(tmp_path, default_encoder.encode(CORPUS))
    invoke("index", "build", str(folder), "-o", str(tmp_path / "b.index"), "-q")
    result = invoke("search", "food", "--index", str(tmp_path / "b.index"), "--model",
                    str(default_encoder.resolved.path), code=3)  # fmt: skip
    assert "org/other" in result.stderr and "rebuild the index" in result.stderr
    result = invoke("search", "food", "--index", str(tmp_path / "b.index"), "--embeddings", "x.npy", code=2)
    assert "drop --embeddings" in result.stderr
    (tmp_path / "broken.index").mkdir()
    assert "not a sentemb index" in invoke("search", "food", "--index", str(tmp_path / "broken.index"), code=1).stderr
