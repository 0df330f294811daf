"""Data integrity and broken input files: no silent row shifts, vectors that know their model, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import ATOL, cached_loads, invoke, read_jsonl_vectors, read_parquet_vectors

pytestmark = pytest.mark.usefixtures(cached_loads.__name__)

TEXTS = ["The cat sleeps.", "Stocks fell sharply.", "A man plays the guitar."]


def test_skip_is_refused_where_rows_have_no_ids(tmp_path):
    (tmp_path / "in.txt").write_bytes(b"one\nbad \xff\nthree\n")
    result = invoke("encode", str(tmp_path / "in.txt"), "-o", str(tmp_path / "v.npy"), "--errors", "skip", code=2)
    assert "would shift every row" in result.stderr
    assert ".jsonl or .parquet" in result.stderr
    assert not (tmp_path / "v.npy").exists()


def test_skip_keeps_ids_in_parquet_and_names_the_skipped(tmp_path, default_encoder):
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in ["a", None, "c", 5, "e"]) + "\n")
    result = invoke("encode", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "v.parquet"), "--errors", "skip")
    assert "skipped 2 records" in result.stderr and "no row for ids 1, 3" in result.stderr
    ids, vectors = read_parquet_vectors(tmp_path / "v.parquet")
    assert ids == [0, 2, 4]
    np.testing.assert_allclose(vectors, default_encoder.encode(["a", "c", "e"]), atol=ATOL)


def test_parquet_output_records_what_made_the_vectors(tmp_path, default_encoder):
    import pyarrow.parquet as pq

    (tmp_path / "c.txt").write_text("\n".join(TEXTS))
    invoke("encode", str(tmp_path / "c.txt"), "-o", str(tmp_path / "c.parquet"))
    facts = json.loads(pq.read_schema(tmp_path / "c.parquet").metadata[b"sentemb"])
    described = default_encoder.describe().to_dict()
    for key in ("model", "sha256", "dim", "pooling", "normalize", "max_length", "precision", "backend"):
        assert facts[key] == described[key], key
    assert facts["numerics"] == "exact"


def test_search_refuses_vectors_of_other_options(tmp_path):
    (tmp_path / "c.txt").write_text("\n".join(TEXTS))
    saved = str(tmp_path / "c.parquet")
    invoke("encode", str(tmp_path / "c.txt"), "-o", saved, "--max-length", "128")
    result = invoke("search", "music", "--embeddings", saved, code=1)
    assert "max_length: 128 there, 256 now" in result.stderr
    assert "c.parquet" in result.stderr
    result = invoke("search", "music", "--embeddings", saved, "--no-normalize", "--max-length", "128", code=1)
    assert "normalize: True there, False now" in result.stderr
    hits = invoke("search", "music", "--embeddings", saved, "--max-length", "128", "-k", "1", "--format", "jsonl")
    assert json.loads(hits.stdout)["id"] == 2


@pytest.mark.parametrize("content", [b"", b"PAR1\x00\x01truncated"], ids=["empty", "truncated"])
def test_empty_or_truncated_parquet_is_one_line(tmp_path, content):
    (tmp_path / "in.parquet").write_bytes(content)
    result = invoke("encode", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "v.npy"), code=1)
    assert f"{tmp_path / 'in.parquet'}: not a readable parquet file" in result.stderr
    result = invoke("search", "q", "--corpus", str(tmp_path / "in.parquet"), code=1)
    assert "not a readable parquet file" in result.stderr


def test_corrupt_parquet_pages_are_an_input_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": [f"text number {i} " * 5 for i in range(2000)]}), path, compression="zstd")
    data = bytearray(path.read_bytes())
    for i in range(200, 1200):  # inside the first data page; the footer stays intact
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    result = invoke("encode", str(path), "-o", str(tmp_path / "o.npy"), code=1)
    assert f"{path}: damaged parquet data" in result.stderr
    assert "o.npy" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_lone_surrogate_in_jsonl_names_the_line_or_is_skipped(tmp_path, default_encoder):
    (tmp_path / "in.jsonl").write_text('{"text": "fine"}\n{"text": "bad \\ud800 text"}\n{"text": "last"}\n')
    result = invoke("encode", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "v.jsonl"), code=1)
    assert "in.jsonl: line 2: character 5 is a lone surrogate (U+D800)" in result.stderr
    invoke("encode", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "v.jsonl"), "--errors", "skip")
    ids, vectors = read_jsonl_vectors(tmp_path / "v.jsonl")
    assert ids == [0, 2]
    np.testing.assert_allclose(vectors, default_encoder.encode(["fine", "last"]), atol=ATOL)
    invoke("encode", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "r.jsonl"), "--errors", "replace")
    _, replaced = read_jsonl_vectors(tmp_path / "r.jsonl")
    np.testing.assert_allclose(replaced[1], default_encoder.encode(["bad \ufffd text"])[0], atol=ATOL)


def test_text_arguments_that_are_not_utf8(tmp_path, default_encoder):
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")  # how Python passes such argv bytes on
    result = invoke("encode", "-t", "ok", "-t", bad, "-o", str(tmp_path / "v.jsonl"), code=1)
    assert "--text number 2 is not valid UTF-8" in result.stderr
    invoke("encode", "-t", "ok", "-t", bad, "-t", "fine", "-o", str(tmp_path / "v.jsonl"), "--errors", "skip")
    assert read_jsonl_vectors(tmp_path / "v.jsonl")[0] == [0, 2]
    assert "TEXT number 1" in invoke("similarity", bad, "ok", code=1).stderr
    assert "QUERY number 1" in invoke("search", bad, "--corpus", str(tmp_path / "v.jsonl"), code=1).stderr


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_utf16_and_utf32_files_are_named(tmp_path, encoding):
    (tmp_path / "in.txt").write_bytes("first\nsecond\n".encode(encoding))  # Python writes the BOM
    result = invoke("encode", str(tmp_path / "in.txt"), "-o", str(tmp_path / "v.jsonl"), code=1)
    assert f"the file is {encoding.upper()}-LE" in result.stderr
    assert "iconv" in result.stderr


def test_similarity_pairs_keep_input_positions_when_skipping(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"A cat sits.\nbad \xff line\nA kitten sits.\nStocks fell.\n")
    result = invoke("similarity", "--file", str(tmp_path / "t.txt"), "--errors", "skip", "--format", "jsonl")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {(r["i"], r["j"]) for r in rows} == {(0, 2), (0, 3), (2, 3)}
    assert next(r for r in rows if (r["i"], r["j"]) == (0, 2))["text_j"] == "A kitten sits."
