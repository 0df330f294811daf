"""Sparse vectors on the command line: `sentemb encode --sparse-model` files read back, `sentemb search
--sparse-model` alone and beside a dense model (--hybrid), and `sentemb batch --sparse-model` shards with
their manifest and resume.

The sparse model is :class:`tests.fakes.FakeSparseEncoder` (a lexical stand-in with the SparseEncoder's
methods) put in place of ``sentemb.sparse.load_sparse``, so the commands' own paths (flags, files, fusion)
run as they do for a real SPLADE model."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from cli_helpers import cached_loads, invoke
from fakes import FakeSparseEncoder
from sentemb.retrieval.sparse_files import read_sparse

CORPUS = [
    "The cat sat on the mat.",
    "A dog barked at the postman.",
    "Stock markets fell sharply on Monday.",
    "A kitten is sleeping on a rug.",
]


@pytest.fixture
def fake_sparse(monkeypatch):
    """``sentemb.sparse.load_sparse`` answers with a FakeSparseEncoder; the options it got are recorded."""
    loads: list[tuple[str, dict]] = []
    module = sys.modules.get("sentemb.sparse") or types.ModuleType("sentemb.sparse")

    def load_sparse(name, **options):
        loads.append((name, options))
        return FakeSparseEncoder(
            name, max_length=options.get("max_length") or 32, max_active_dims=options.get("max_active_dims")
        )

    monkeypatch.setattr(module, "load_sparse", load_sparse, raising=False)
    monkeypatch.setitem(sys.modules, "sentemb.sparse", module)
    return loads


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"doc_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(CORPUS)))
    return path


def test_encode_writes_jsonl_that_reads_back_as_the_models_vectors(tmp_path, corpus_file, fake_sparse):
    out = tmp_path / "docs.jsonl"
    invoke("encode", str(corpus_file), "--id-field", "doc_id", "--sparse-model", "my-splade", "-o", str(out))
    expected = FakeSparseEncoder("my-splade").encode(CORPUS)
    first = json.loads(out.read_text().splitlines()[0])
    assert sorted(first) == ["id", "indices", "values"] and first["id"] == "d0"
    assert first["indices"] == sorted(first["indices"])
    read = read_sparse(out, dim=expected.dim)
    assert read.ids == ["d0", "d1", "d2", "d3"]
    np.testing.assert_array_equal(read.embeddings.to_dense(), expected.to_dense())
    assert fake_sparse == [("my-splade", {})]


def test_encode_writes_parquet_with_two_list_columns_and_the_model_in_its_metadata(tmp_path, corpus_file, fake_sparse):
    import pyarrow.parquet as pq

    out = tmp_path / "docs.parquet"
    invoke("encode", str(corpus_file), "--sparse-model", "my-splade", "--max-active-dims", "3", "--max-length", "16",
           "--backend", "onnx", "-o", str(out))  # fmt: skip
    import pyarrow as pa

    schema = pq.read_schema(out)
    assert schema.field("indices").type.value_type == pa.int32()
    assert schema.field("values").type.value_type == pa.float32()
    read = read_sparse(out)
    assert read.model["kind"] == "sparse" and read.model["model"] == "my-splade"
    assert read.model["dim"] == read.embeddings.dim == FakeSparseEncoder().dim
    assert read.ids == [0, 1, 2, 3]
    expected = FakeSparseEncoder(max_length=16, max_active_dims=3).encode(CORPUS)
    np.testing.assert_array_equal(read.embeddings.to_dense(), expected.to_dense())
    assert read.embeddings.nnz_per_row().max() == 3
    _, options = fake_sparse[0]
    assert options["max_active_dims"] == 3 and options["max_length"] == 16 and options["backend"].value == "onnx"


def test_encode_refuses_what_a_sparse_output_cannot_hold(tmp_path, corpus_file, fake_sparse):
    npy = invoke("encode", str(corpus_file), "--sparse-model", "s", "-o", str(tmp_path / "x.npy"), code=2)
    assert ".jsonl or .parquet" in npy.stderr
    both = invoke("encode", str(corpus_file), "--sparse-model", "s", "-m", "d", "-o", str(tmp_path / "x.jsonl"), code=2)
    assert "not both" in both.stderr
    quantised = invoke("encode", str(corpus_file), "--sparse-model", "s", "--output-type", "int8",
                       "-o", str(tmp_path / "x.parquet"), code=2)  # fmt: skip
    assert "float32 weights" in quantised.stderr
    pooling = invoke("encode", str(corpus_file), "--sparse-model", "s", "--pooling", "cls",
                     "-o", str(tmp_path / "x.jsonl"), code=2)  # fmt: skip
    assert "--pooling" in pooling.stderr
    alone = invoke("encode", str(corpus_file), "--max-active-dims", "4", "-o", str(tmp_path / "x.jsonl"), code=2)
    assert "--sparse-model" in alone.stderr
    assert not list(tmp_path.glob("x.*")) and fake_sparse == []


def test_encode_to_stdout_and_an_unknown_prompt_name(corpus_file, fake_sparse):
    printed = invoke("encode", "--text", "a cat", "--text", "a dog", "--sparse-model", "s", "-o", "-")
    rows = [json.loads(line) for line in printed.stdout.splitlines()]
    assert [r["id"] for r in rows] == [0, 1] and all(r["values"] for r in rows)
    bad = invoke("encode", "--text", "x", "--sparse-model", "s", "--prompt-name", "nope", "-o", "-", code=2)
    assert "nope" in bad.stderr


def _rows(result):
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_search_with_the_sparse_model_alone_finds_shared_words(corpus_file, fake_sparse):
    result = invoke("search", "where did the cat sit?", "--corpus", str(corpus_file), "--id-field", "doc_id",
                    "--sparse-model", "s", "-k", "2", "--format", "jsonl")  # fmt: skip
    rows = _rows(result)
    assert rows[0]["id"] == "d0" and len(rows) == 2
    assert {r["method"] for r in rows} == {"sparse"} and rows[0]["text"] == CORPUS[0]
    model = FakeSparseEncoder()
    assert rows[0]["score"] == pytest.approx(float(model.similarity(model.encode(["where did the cat sit?"]),
                                                                    model.encode([CORPUS[0]]))[0, 0]))  # fmt: skip


def test_search_reads_saved_sparse_vectors_and_refuses_another_models(tmp_path, corpus_file, fake_sparse):
    saved = tmp_path / "docs.parquet"
    invoke("encode", str(corpus_file), "--id-field", "doc_id", "--sparse-model", "s", "-o", str(saved))
    found = _rows(invoke("search", "markets on Monday", "--sparse-embeddings", str(saved), "--sparse-model", "s",
                         "-k", "1", "--format", "jsonl"))  # fmt: skip
    assert found[0]["id"] == "d2" and "text" not in found[0]
    with_texts = _rows(invoke("search", "markets on Monday", "--sparse-embeddings", str(saved), "--corpus",
                              str(corpus_file), "--sparse-model", "s", "-k", "1", "--format", "jsonl"))  # fmt: skip
    assert with_texts[0]["id"] == "d2" and with_texts[0]["text"] == CORPUS[2]
    other = invoke("search", "markets", "--sparse-embeddings", str(saved), "--sparse-model", "s",
                   "--max-active-dims", "2", code=1)  # fmt: skip
    assert "another model or options" in other.stderr and "max_active_dims" in other.stderr


@pytest.mark.parametrize("fusion", ["rrf", "weighted"])
@pytest.mark.usefixtures(cached_loads.__name__)
def test_hybrid_search_fuses_the_dense_and_sparse_hits(corpus_file, fake_sparse, fusion):
    import sentemb
    from sentemb.retrieval.hybrid import fuse
    from sentemb.sparse_vectors import sparse_search

    query = "a kitten on the mat"
    result = invoke("search", query, "--corpus", str(corpus_file), "--sparse-model", "s", "--hybrid",
                    "--fusion", fusion, "--sparse-weight", "0.3", "-k", "3", "--format", "jsonl")  # fmt: skip
    rows = _rows(result)
    dense_model, sparse_model = sentemb.load(), FakeSparseEncoder()
    dense = sentemb.semantic_search(dense_model.encode_query([query]), dense_model.encode_document(CORPUS), 4)
    sparse = sparse_search(sparse_model.encode_query([query]), sparse_model.encode_document(CORPUS), 4)
    expected = fuse(fusion, [dense, sparse], 3, weights=[0.7, 0.3])[0]
    assert [r["id"] for r in rows] == [hit.corpus_id for hit in expected]
    assert [r["score"] for r in rows] == pytest.approx([hit.score for hit in expected])
    assert {r["method"] for r in rows} == {f"hybrid {fusion}"}


def test_search_refuses_sparse_flags_that_do_not_fit(tmp_path, corpus_file, fake_sparse):
    cases = [
        (["--hybrid"], "--sparse-model"),
        (["--sparse-embeddings", "x.parquet"], "--sparse-model"),
        (["--sparse-model", "s", "-m", "other"], "--hybrid"),
        (["--sparse-model", "s", "--score", "dot"], "--hybrid"),
        (["--sparse-model", "s", "--index", str(tmp_path)], "dense vectors"),
    ]
    for flags, named in cases:
        refused = invoke("search", "a cat", "--corpus", str(corpus_file), *flags, code=2)
        assert named in refused.stderr
    assert fake_sparse == []


# -- sentemb batch --sparse-model: a tiny random SPLADE model saved by sentence-transformers, on a local Ray ----


@pytest.fixture(scope="module")
def tiny_splade(tmp_path_factory):
    from tiny_models import build_tiny_splade

    return build_tiny_splade("bert", tmp_path_factory.mktemp("splade") / "tiny-splade", max_seq_length=32)


@pytest.fixture(scope="module")
def ray_local():
    """A small private Ray instance for the batch tests (it never joins a Ray already running here)."""
    import logging
    import shutil

    ray = pytest.importorskip("ray")
    from sentemb.batch.ray_cluster import private_temp_dir, shutdown

    temp_dir = private_temp_dir()
    ray.init(address="local", _temp_dir=temp_dir, num_cpus=2, object_store_memory=200_000_000,
             include_dashboard=False, logging_level=logging.WARNING)  # fmt: skip
    yield ray
    shutdown(ray)
    shutil.rmtree(temp_dir, ignore_errors=True)


def _batch_input(tmp_path, rows=24):
    texts = [f"{CORPUS[i % len(CORPUS)]} Row {i} of the corpus." for i in range(rows)]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path, texts


def test_batch_writes_sparse_shards_that_resume_and_refuse_other_options(ray_local, tmp_path, tiny_splade):
    import sentemb
    from sentemb.batch import BatchJob, run_batch
    from sentemb.config import EncoderConfig
    from sentemb.errors import ConfigError

    source, texts = _batch_input(tmp_path)
    out = tmp_path / "out"
    job = BatchJob(input=str(source), output_dir=str(out), sparse_model=str(tiny_splade), shard_bytes=600,
                   num_actors=1)  # fmt: skip
    first = run_batch(job, EncoderConfig(device="cpu"))
    assert first.shards_planned >= 3 and first.rows_written == len(texts) and first.header["kind"] == "sparse"
    read = read_sparse(out)
    expected = sentemb.load_sparse(str(tiny_splade), device="cpu").encode(texts)
    assert read.ids == [f"r{i}" for i in range(len(texts))] and read.embeddings.dim == expected.dim
    np.testing.assert_array_equal(read.embeddings.indices, expected.indices)
    np.testing.assert_allclose(read.embeddings.values, expected.values, rtol=1e-5, atol=1e-6)
    shards = sorted(out.glob("*.parquet"))
    shards[1].unlink()  # lost: the rerun writes it again, and only it
    again = run_batch(job, EncoderConfig(device="cpu"))
    assert (again.shards_skipped, again.shards_written) == (first.shards_planned - 1, 1)
    np.testing.assert_array_equal(read_sparse(out).embeddings.to_dense(), read.embeddings.to_dense())
    other = BatchJob(input=str(source), output_dir=str(out), sparse_model=str(tiny_splade), shard_bytes=600,
                     num_actors=1, max_active_dims=5)  # fmt: skip
    with pytest.raises(ConfigError, match="different model or options"):
        run_batch(other, EncoderConfig(device="cpu"))


def test_batch_refuses_sparse_options_that_do_not_fit(tmp_path):
    from sentemb.batch import BatchJob
    from sentemb.errors import ConfigError

    with pytest.raises(ConfigError, match="float32"):
        BatchJob(input="in.jsonl", output_dir="out", sparse_model="m", output_type="int8")
    with pytest.raises(ConfigError, match="sparse_model"):
        BatchJob(input="in.jsonl", output_dir="out", max_active_dims=4)
    with pytest.raises(ConfigError, match="'indices' and 'values'"):
        BatchJob(input="in.jsonl", output_dir="out", sparse_model="m", carry_columns=("values",))
    refused = invoke("batch", "in.jsonl", str(tmp_path / "out"), "--sparse-model", "m", "--output-type", "int8",
                     code=2)  # fmt: skip
    assert "float32" in refused.stderr


# -- the same commands with a real (tiny, random) SPLADE model: the files and hits are the library's --------------


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_encode_with_a_real_splade_model_writes_the_librarys_vectors(tmp_path, corpus_file, tiny_splade, suffix):
    import sentemb

    out = tmp_path / f"docs{suffix}"
    invoke("encode", str(corpus_file), "--id-field", "doc_id", "--sparse-model", str(tiny_splade), "--device", "cpu",
           "--max-active-dims", "16", "-o", str(out))  # fmt: skip
    model = sentemb.load_sparse(str(tiny_splade), device="cpu", max_active_dims=16)
    expected = model.encode(CORPUS)
    read = read_sparse(out, dim=model.dim)
    assert read.ids == ["d0", "d1", "d2", "d3"] and read.embeddings.nnz_per_row().tolist() == [16] * 4
    np.testing.assert_array_equal(read.embeddings.indices, expected.indices)
    np.testing.assert_allclose(read.embeddings.values, expected.values, rtol=1e-6)
    if suffix == ".parquet":
        assert read.model["sha256"] == model.describe()["sha256"] and read.model["max_active_dims"] == 16


@pytest.mark.usefixtures(cached_loads.__name__)
def test_search_and_hybrid_with_a_real_splade_model_give_the_librarys_hits(corpus_file, tiny_splade):
    import sentemb
    from sentemb.retrieval.hybrid import fuse
    from sentemb.sparse_vectors import sparse_search

    query = "a kitten on the mat"
    model, dense_model = sentemb.load_sparse(str(tiny_splade), device="cpu"), sentemb.load()
    sparse = sparse_search(model.encode_query([query]), model.encode_document(CORPUS), 4)
    alone = _rows(invoke("search", query, "--corpus", str(corpus_file), "--sparse-model", str(tiny_splade),
                         "--device", "cpu", "-k", "2", "--format", "jsonl"))  # fmt: skip
    assert [r["id"] for r in alone] == [hit.corpus_id for hit in sparse[0][:2]]
    assert [r["score"] for r in alone] == pytest.approx([hit.score for hit in sparse[0][:2]], rel=1e-5)
    dense = sentemb.semantic_search(dense_model.encode_query([query]), dense_model.encode_document(CORPUS), 4)
    fused = _rows(invoke("search", query, "--corpus", str(corpus_file), "--sparse-model", str(tiny_splade),
                         "--hybrid", "--fusion", "weighted", "-k", "3", "--format", "jsonl"))  # fmt: skip
    expected = fuse("weighted", [dense, sparse], 3)[0]
    assert [r["id"] for r in fused] == [hit.corpus_id for hit in expected]
    assert {r["method"] for r in fused} == {"hybrid weighted"}
