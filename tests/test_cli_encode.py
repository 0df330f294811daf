"""`sentemb encode`: every input form and format, round trips against the library, and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sentemb
from cli_helpers import ATOL, cached_loads, invoke, read_jsonl_vectors, read_parquet_vectors

pytestmark = pytest.mark.usefixtures(cached_loads.__name__)

TEXTS = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    'Ünïcödé, commas, "quotes"',
]


@pytest.fixture(scope="module")
def expected(default_encoder):
    return default_encoder.encode(TEXTS)


def write_inputs(folder):
    (folder / "t.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    (folder / "t.jsonl").write_text(
        "\n".join(json.dumps({"key": f"k{i}", "body": t}) for i, t in enumerate(TEXTS)) + "\n", encoding="utf-8"
    )
    import csv

    for name, delimiter in (("t.csv", ","), ("t.tsv", "\t")):
        with (folder / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter=delimiter)
            writer.writerow(["key", "sentence"])
            writer.writerows([f"k{i}", t] for i, t in enumerate(TEXTS))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"key": [f"k{i}" for i in range(len(TEXTS))], "sentence": TEXTS}), folder / "t.parquet")


@pytest.mark.parametrize(
    ("name", "options", "out"),
    [
        ("t.txt", [], "npy"),
        ("t.txt", [], "jsonl"),
        ("t.txt", [], "parquet"),
        ("t.jsonl", ["--field", "body", "--id-field", "key"], "parquet"),
        ("t.csv", ["--column", "sentence", "--id-field", "key"], "jsonl"),
        ("t.tsv", ["--column", "sentence", "--id-field", "key"], "npy"),
        ("t.parquet", ["--column", "sentence", "--id-field", "key"], "jsonl"),
        ("t.parquet", ["--column", "sentence", "--id-field", "key"], "parquet"),
    ],
)
def test_every_input_format_round_trips(tmp_path, expected, name, options, out):
    write_inputs(tmp_path)
    target = tmp_path / f"out.{out}"
    invoke("encode", str(tmp_path / name), "-o", str(target), *options)
    want_ids = list(range(len(TEXTS))) if name == "t.txt" else [f"k{i}" for i in range(len(TEXTS))]
    if out == "npy":
        vectors = np.load(target)
        assert vectors.dtype == np.float32
    elif out == "jsonl":
        ids, vectors = read_jsonl_vectors(target)
        assert ids == want_ids
    else:
        ids, vectors = read_parquet_vectors(target)
        assert ids == want_ids
    np.testing.assert_allclose(vectors, expected, atol=ATOL)


def test_parquet_output_is_plain_arrow_readable_by_pandas(tmp_path, expected):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = tmp_path / "v.parquet"
    invoke("encode", *[arg for t in TEXTS for arg in ("--text", t)], "-o", str(target))
    schema = pq.read_schema(target)
    assert schema.field("embedding").type == pa.list_(pa.float32(), 384)
    frame = pd.read_parquet(target)
    assert list(frame["id"]) == list(range(len(TEXTS)))
    np.testing.assert_allclose(np.stack(frame["embedding"].to_list()), expected, atol=ATOL)


def test_stdin_to_stdout(expected):
    result = invoke("encode", "-", "-o", "-", input="\n".join(TEXTS) + "\n")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in records] == list(range(len(TEXTS)))
    np.testing.assert_allclose(np.array([r["embedding"] for r in records]), expected, atol=ATOL)


def test_npy_streams_many_chunks_in_order(tmp_path, default_encoder, monkeypatch):
    import sentemb.cli.encode as encode_module

    monkeypatch.setattr(encode_module, "CHUNK_ROWS", 3)  # several chunks from a short file
    texts = [f"sentence number {i} about {w}" for i, w in enumerate(["cats", "dogs", "rain", "tax", "jazz"] * 2)]
    (tmp_path / "in.txt").write_text("\n".join(texts), encoding="utf-8")
    invoke("encode", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.npy"))
    loaded = np.load(tmp_path / "out.npy", mmap_mode="r")
    assert loaded.shape == (len(texts), 384)
    np.testing.assert_allclose(loaded, default_encoder.encode(texts), atol=ATOL)


def test_options_reach_the_encoder(tmp_path):
    options = ["--pooling", "cls", "--no-normalize", "--max-length", "8", "--batch-size", "2", "--forward-tokens", "64"]
    invoke("encode", *[arg for t in TEXTS for arg in ("-t", t)], "-o", str(tmp_path / "v.npy"), *options)
    library = sentemb.load(device="cpu", pooling="cls", normalize=False, max_length=8, batch_size=2, forward_tokens=64)
    got = np.load(tmp_path / "v.npy")
    np.testing.assert_allclose(got, library.encode(TEXTS), atol=ATOL)
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0)


def test_long_text_chunk_matches_library(tmp_path):
    long_text = " ".join(["the quick brown fox jumps over the lazy dog"] * 20)
    invoke("encode", "-t", long_text, "-t", TEXTS[0], "-o", str(tmp_path / "v.npy"), "--long-text", "chunk",
           "--max-length", "32", "--chunk-overlap", "8")
    library = sentemb.load(device="cpu", long_text="chunk", max_length=32, chunk_overlap=8)
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), library.encode([long_text, TEXTS[0]]), atol=ATOL)


def test_long_text_error_is_one_line(tmp_path):
    result = invoke("encode", "-t", "word " * 100, "-o", str(tmp_path / "v.npy"), "--long-text", "error",
                    "--max-length", "16", code=1)
    assert "16" in result.stderr
    assert not (tmp_path / "v.npy").exists()


def test_existing_output_needs_force(tmp_path):
    target = tmp_path / "v.npy"
    target.write_bytes(b"keep me")
    result = invoke("encode", "-t", "x", "-o", str(target), code=4)
    assert "--force" in result.stderr
    assert target.read_bytes() == b"keep me"
    invoke("encode", "-t", "x", "-o", str(target), "--force")
    assert np.load(target).shape == (1, 384)


def test_interrupted_run_leaves_no_partial_file(tmp_path, monkeypatch):
    from sentemb.cli import output

    def interrupted(self, ids, vectors):
        raise KeyboardInterrupt

    monkeypatch.setattr(output.ParquetWriter, "write", interrupted)
    target = tmp_path / "v.parquet"
    result = invoke("encode", "-t", "a", "-o", str(target), code=130)
    assert "interrupted" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "options", "needle"),
    [
        (b"text\n", ["--column", "body"], "no column 'body'"),
        (b"", [], "no texts"),
        (b"text\n", [], "no texts"),
        (b"id,text\n1,fine\n2\n", [], "line 3"),
    ],
    ids=["missing-column", "empty-file", "header-only", "short-row"],
)
def test_bad_csv(tmp_path, content, options, needle):
    (tmp_path / "in.csv").write_bytes(content)
    result = invoke("encode", str(tmp_path / "in.csv"), "-o", str(tmp_path / "v.npy"), *options, code=1)
    assert needle in result.stderr
    assert not (tmp_path / "v.npy").exists()


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        (['{"text": "ok"}', '{"body": "no text field"}'], "line 2 has no field 'text'"),
        (['{"text": "ok"}', '{"text": null}'], "line 2: 'text' is null"),
        (['{"text": "ok"}', '{"text": "ok"}', '{"text": 42}'], "line 3: 'text' is int"),
        (['{"text": "ok"}', "{not json"], "line 2 is not valid JSON"),
    ],
    ids=["missing-field", "null", "number", "broken-json"],
)
def test_bad_jsonl_names_the_line(tmp_path, lines, needle):
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    result = invoke("encode", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "v.jsonl"), code=1)
    assert needle in result.stderr


def test_null_row_can_be_skipped(tmp_path, default_encoder):
    (tmp_path / "in.jsonl").write_text('{"text": "first"}\n{"text": null}\n{"text": "third"}\n')
    result = invoke("encode", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "v.jsonl"), "--errors", "skip")
    assert "skipped 1" in result.stderr
    ids, vectors = read_jsonl_vectors(tmp_path / "v.jsonl")
    assert ids == [0, 2]  # ids keep pointing at the input records
    np.testing.assert_allclose(vectors, default_encoder.encode(["first", "third"]), atol=ATOL)


def test_bad_parquet_values(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a", None, "c"], "n": [1, 2, 3]}), tmp_path / "in.parquet")
    result = invoke("encode", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "v.npy"), code=1)
    assert "row 1: 'text' is null" in result.stderr
    result = invoke("encode", str(tmp_path / "in.parquet"), "--column", "n", "-o", str(tmp_path / "v.npy"), code=1)
    assert "not text" in result.stderr
    result = invoke("encode", str(tmp_path / "in.parquet"), "--column", "nope", "-o", str(tmp_path / "v.npy"), code=1)
    assert "no column 'nope'" in result.stderr


def test_invalid_utf8_names_the_line_and_can_go_on(tmp_path, default_encoder):
    (tmp_path / "in.txt").write_bytes(b"good line\nbad \xff\xfe bytes\nlast line\n")
    out = str(tmp_path / "v.npy")
    result = invoke("encode", str(tmp_path / "in.txt"), "-o", out, code=1)
    assert "line 2 is not valid UTF-8" in result.stderr
    skipped = invoke("encode", str(tmp_path / "in.txt"), "-o", str(tmp_path / "v.jsonl"), "--errors", "skip")
    assert "no row for ids 1" in skipped.stderr
    ids, vectors = read_jsonl_vectors(tmp_path / "v.jsonl")
    assert ids == [0, 2]  # line numbers (from 0) of the texts that were embedded
    np.testing.assert_allclose(vectors, default_encoder.encode(["good line", "last line"]), atol=ATOL)
    invoke("encode", str(tmp_path / "in.txt"), "-o", out, "--errors", "replace", "--force")
    replaced = default_encoder.encode(["good line", "bad \ufffd\ufffd bytes", "last line"])
    np.testing.assert_allclose(np.load(out), replaced, atol=ATOL)


def test_empty_stdin(tmp_path):
    result = invoke("encode", "-", "-o", str(tmp_path / "v.npy"), input="", code=1)
    assert "no texts" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["missing.txt", "-o", "{tmp}/v.npy"], 1, "missing.txt: no such file"),
        (["-t", "x", "-o", "{tmp}/no/such/folder/v.npy"], 4, "does not exist"),
        (["-t", "x", "-o", "{tmp}/dir.npy"], 4, "is a folder"),
        (["-t", "x", "-o", "{tmp}/v.xyz"], 4, "cannot tell the output format"),
        (["-t", "x", "-o", "{tmp}/v.npy", "-m", "no-such-model-anywhere"], 3, "no-such-model-anywhere"),
        (["-t", "x", "-o", "{tmp}/v.npy", "--device", "tpu"], 2, "device"),
        (["{tmp}/in.doc", "-o", "{tmp}/v.npy"], 1, "cannot tell the format"),
        (["-t", "x", "-o", "-", "--output-format", "npy"], 2, "stdout"),
    ],
    ids=["missing-input", "missing-folder", "output-is-folder", "unknown-output", "unknown-model", "bad-device",
         "unknown-input", "npy-to-stdout"],
)
def test_bad_arguments_give_one_line_and_exit_code(tmp_path, args, code, needle):
    (tmp_path / "in.doc").write_text("x")
    (tmp_path / "dir.npy").mkdir()
    result = invoke("encode", *[a.format(tmp=tmp_path) for a in args], code=code)
    assert needle in result.stderr
    assert not (tmp_path / "v.npy").exists()


def test_unwritable_output_path(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    result = invoke("encode", "-t", "x", "-o", str(tmp_path / "file.txt" / "v.npy"), code=4)
    assert "v.npy" in result.stderr


def test_progress_shows_rows_per_second_and_quiet_is_silent(tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(TEXTS))
    shown = invoke("encode", str(tmp_path / "in.txt"), "-o", str(tmp_path / "a.npy"), "--progress")
    assert "rows/s" in shown.stderr
    assert f"{len(TEXTS)} rows" in shown.stderr
    quiet = invoke("encode", str(tmp_path / "in.txt"), "-o", str(tmp_path / "b.npy"), "--quiet", "--progress")
    assert quiet.stderr == ""
    piped = invoke("encode", str(tmp_path / "in.txt"), "-o", str(tmp_path / "c.npy"))  # CliRunner: not a terminal
    assert piped.stderr == ""
