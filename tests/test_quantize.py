"""sentemb.quantize gives the same bytes as sentence-transformers' quantize_embeddings, on random and real vectors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sentence_transformers.quantization import quantize_embeddings

import sentemb
from sentemb.retrieval.quantize import OUTPUT_TYPES, dequantize, quantization_ranges

RNG = np.random.default_rng(7)
RANDOM = {
    "normal-f32": RNG.standard_normal((300, 384)).astype(np.float32),
    "uniform-f64": RNG.uniform(-0.3, 0.2, (257, 100)),  # float64, a dimension not a multiple of 8
    "with-zeros-and-constant-dim": np.where(RNG.random((120, 24)) < 0.2, 0.0, RNG.standard_normal((120, 24)))
    * np.r_[np.ones(23), 0.0].astype(np.float32),
}


def _same(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert ours.tobytes() == theirs.tobytes()


@pytest.mark.parametrize("name", sorted(RANDOM))
@pytest.mark.parametrize("output", OUTPUT_TYPES)
def test_random_vectors_match_sentence_transformers(name, output):
    vectors = RANDOM[name]
    before = vectors.copy()
    _same(sentemb.quantize(vectors, output), quantize_embeddings(vectors, output))
    calibration = RNG.standard_normal((500, vectors.shape[1])).astype(np.float32) * 0.2
    _same(sentemb.quantize(vectors, output, calibration=calibration),
          quantize_embeddings(vectors, output, calibration_embeddings=calibration))
    ranges = np.vstack([calibration.min(0), calibration.max(0)])
    _same(sentemb.quantize(vectors, output, ranges=ranges), quantize_embeddings(vectors, output, ranges=ranges))
    _same(sentemb.quantize(vectors[0], output, ranges=ranges), quantize_embeddings(vectors[0], output, ranges=ranges))
    np.testing.assert_array_equal(vectors, before)  # the input is never modified


@pytest.mark.slow
@pytest.mark.parametrize("output", OUTPUT_TYPES)
def test_real_vectors_match_sentence_transformers(sts_reference, output):
    vectors = sts_reference.vectors
    corpus, queries = vectors[: len(vectors) // 2], vectors[len(vectors) // 2 :]
    _same(sentemb.quantize(corpus, output), quantize_embeddings(corpus, output))
    _same(sentemb.quantize(queries, output, calibration=corpus),
          quantize_embeddings(queries, output, calibration_embeddings=corpus))
    ranges = quantization_ranges(corpus)
    _same(sentemb.quantize(queries, output, ranges=ranges), quantize_embeddings(queries, output, ranges=ranges))


def test_packing_and_sizes():
    vectors = RANDOM["normal-f32"]
    assert sentemb.quantize(vectors, "ubinary").shape == (300, 48)
    bits = np.unpackbits(sentemb.quantize(vectors, "ubinary"), axis=-1)
    np.testing.assert_array_equal(bits, (vectors > 0).astype(np.uint8))
    np.testing.assert_array_equal(
        sentemb.quantize(vectors, "binary").view(np.uint8) ^ 0x80, sentemb.quantize(vectors, "ubinary")
    )
    assert sentemb.quantize(np.zeros((0, 10), np.float32), "binary").shape == (0, 2)


@pytest.mark.parametrize("output", ["int8", "uint8"])
def test_dequantize_is_within_one_step(output):
    vectors = RANDOM["normal-f32"]
    ranges = quantization_ranges(vectors)
    back = dequantize(sentemb.quantize(vectors, output, ranges=ranges), output, ranges)
    step = (ranges[1] - ranges[0]) / 255
    assert np.all(back <= vectors + 1e-5) and np.all(vectors - back <= step + 1e-5)


def test_binary_dequantize_gives_the_bits_back():
    vectors = RANDOM["uniform-f64"]
    for output in ("binary", "ubinary"):
        bits = dequantize(sentemb.quantize(vectors, output), output, dim=vectors.shape[1])
        np.testing.assert_array_equal(bits, (vectors > 0).astype(np.uint8))


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: sentemb.quantize(np.ones((3, 4), np.float32), "int4"), "unknown"),
        (lambda: sentemb.quantize(np.ones((3, 4), np.int8), "int8"), "quantised already"),
        (lambda: sentemb.quantize(np.ones(4, np.float32), "int8"), "single vector"),
        (lambda: sentemb.quantize(np.ones((3, 4), np.float32), "int8", ranges=np.ones((2, 5))), "shape"),
        (lambda: sentemb.quantize(np.ones((2, 3, 4), np.float32), "binary"), "2-D"),
    ],
)
def test_bad_arguments_say_what_to_do(call, needle):
    with pytest.raises(sentemb.ConfigError, match=needle):
        call()


@pytest.mark.parametrize("output", OUTPUT_TYPES)
def test_parquet_keeps_packed_codes_and_ranges(tmp_path, output):
    import pyarrow.parquet as pq

    from sentemb.retrieval.vectors import read_vectors, write_vectors_parquet

    vectors = RANDOM["uniform-f64"]
    ranges = quantization_ranges(vectors)
    codes = sentemb.quantize(vectors, output, ranges=ranges)
    keep = ranges if output.endswith("int8") else None
    write_vectors_parquet(tmp_path / "q.parquet", [f"r{i}" for i in range(len(codes))], codes, output,
                          dim=vectors.shape[1], ranges=keep)  # fmt: skip
    schema = pq.read_schema(tmp_path / "q.parquet")
    assert str(schema.field("embedding").type) == f"fixed_size_list<element: {_arrow(output)}>[{codes.shape[1]}]"
    back = read_vectors(tmp_path / "q.parquet")
    assert back.output == output and back.dim == vectors.shape[1] and back.ids[3] == "r3"
    _same(back.vectors, codes)
    if keep is not None:
        np.testing.assert_array_equal(back.ranges, ranges)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def _arrow(output):
    return {"float32": "float", "int8": "int8", "uint8": "uint8", "binary": "int8", "ubinary": "uint8"}[output]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"id": 0, "embedding": [1, 2]}\n{"id": 1, "embedding": [1]}\n', "differ in length"),
        ('{"id": 0, "embedding": [1, 2]}\n{"id": 1, "embedding": [1, 2\n', "not readable JSON lines"),
        ('{"id": 0, "vector": [1, 2]}\n', "expected an object with a 'embedding' list"),
        ('{"sentemb.quantize": {"output": "int8", "dim": 2, "ranges": null}}\n', "holds no vectors"),
        ('{"sentemb.quantize": {"output": "int4", "dim": 2}}\n{"id": 0, "embedding": [1, 2]}\n', "int4"),
    ],
)
def test_damaged_jsonl_vectors_are_refused(tmp_path, text, needle):
    from sentemb.retrieval.vectors import read_vectors

    (tmp_path / "v.jsonl").write_text(text)
    with pytest.raises(sentemb.VectorsError, match=re.escape(needle)):
        read_vectors(tmp_path / "v.jsonl")
