"""`sentemb encode --output-type`: packed codes in .npy, .jsonl, .parquet equal sentemb.quantize of the floats."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sentemb
from cli_helpers import cached_loads, invoke
from sentemb.retrieval.calibrate import calibration_ranges
from sentemb.retrieval.quantize import quantization_ranges
from sentemb.retrieval.vectors import read_vectors

pytestmark = pytest.mark.usefixtures(cached_loads.__name__)

TEXTS = ["A man is eating pasta.", "The cat sleeps on the sofa.", "Stocks fell sharply on Monday.",
         "A woman plays the violin.", "Someone is cooking dinner.", "A dog runs across the park."]  # fmt: skip


@pytest.fixture
def floats(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS))
    invoke("encode", str(source), "-o", str(tmp_path / "f.npy"), "-q")
    return source, np.load(tmp_path / "f.npy")


@pytest.mark.parametrize("output_type", ["int8", "uint8", "binary", "ubinary"])
def test_parquet_codes_equal_quantize_of_the_float_output(tmp_path, floats, default_encoder, output_type):
    source, vectors = floats
    invoke("encode", str(source), "-o", str(tmp_path / "q.parquet"), "--output-type", output_type, "-q")
    saved = read_vectors(tmp_path / "q.parquet")
    assert saved.output == output_type and saved.dim == vectors.shape[1] and saved.ids == list(range(6))
    if output_type.endswith("int8"):
        np.testing.assert_allclose(saved.ranges, calibration_ranges(default_encoder)[0], atol=2e-5)
    expected = sentemb.quantize(vectors, output_type, ranges=saved.ranges)
    assert saved.vectors.dtype == expected.dtype and np.array_equal(saved.vectors, expected)
    import pyarrow.parquet as pq

    metadata = pq.read_schema(tmp_path / "q.parquet").metadata
    facts = json.loads(metadata[b"sentemb.quantize"])
    assert facts.get("calibration") == ("bundled" if output_type.endswith("int8") else None)
    assert len(metadata) > 1  # the model facts `sentemb search --embeddings` checks are kept beside the ranges


@pytest.mark.parametrize("output_type", ["binary", "ubinary"])
def test_npy_and_jsonl_hold_packed_bits(tmp_path, floats, output_type):
    source, vectors = floats
    invoke("encode", str(source), "-o", str(tmp_path / "q.npy"), "--output-type", output_type, "-q")
    invoke("encode", str(source), "-o", str(tmp_path / "q.jsonl"), "--output-type", output_type, "-q")
    expected = sentemb.quantize(vectors, output_type)
    packed = np.load(tmp_path / "q.npy")
    assert packed.dtype == expected.dtype and packed.shape == (6, 48) and np.array_equal(packed, expected)
    header, *rows = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert header == {"sentemb.quantize": {"output": output_type, "dim": 384, "ranges": None}}
    assert [r["embedding"] for r in rows] == expected.tolist()
    saved = read_vectors(tmp_path / "q.jsonl")
    assert (saved.output, saved.dim, saved.ids) == (output_type, 384, list(range(6)))
    assert saved.vectors.dtype == expected.dtype and np.array_equal(saved.vectors, expected)


@pytest.mark.parametrize("output_type", ["int8", "uint8"])
@pytest.mark.parametrize("stdout", [False, True])
def test_jsonl_carries_the_ranges_the_rows_were_quantised_with(tmp_path, floats, output_type, stdout):
    source, vectors = floats
    target = tmp_path / "q.jsonl"
    result = invoke("encode", str(source), "-o", "-" if stdout else str(target), "--output-type", output_type, "-q")
    if stdout:
        target.write_text(result.stdout)
    header = json.loads(target.read_text().splitlines()[0])["sentemb.quantize"]
    assert (header["output"], header["dim"], header["calibration"]) == (output_type, 384, "bundled")
    assert header["calibration_texts"] > 100 and len(header["calibration_sha256"]) == 64
    saved = read_vectors(target)
    assert saved.ranges is not None and saved.ranges.shape == (2, 384) and saved.ids == list(range(6))
    expected = sentemb.quantize(vectors, output_type, ranges=saved.ranges)
    assert saved.vectors.dtype == expected.dtype and np.array_equal(saved.vectors, expected)
    invoke("encode", str(source), "-o", str(tmp_path / "q.parquet"), "--output-type", output_type, "-q")
    np.testing.assert_array_equal(saved.ranges, read_vectors(tmp_path / "q.parquet").ranges)  # the same ranges


def test_calibration_file_sets_the_int8_ranges(tmp_path, floats, default_encoder):
    source, vectors = floats
    calibration = tmp_path / "cal.txt"
    calibration.write_text("\n".join(TEXTS[:4]))
    invoke("encode", str(source), "-o", str(tmp_path / "q.jsonl"), "--output-type", "int8",
           "--calibration", str(calibration), "-q")  # fmt: skip
    ranges = calibration_ranges(default_encoder, calibration)[0]
    np.testing.assert_allclose(ranges, quantization_ranges(default_encoder.encode(TEXTS[:4])))
    assert not np.allclose(ranges, calibration_ranges(default_encoder)[0])  # not the bundled sentences'
    saved = read_vectors(tmp_path / "q.jsonl")
    np.testing.assert_allclose(saved.ranges, ranges, atol=2e-5)  # another encoder instance: float noise
    assert np.array_equal(saved.vectors, sentemb.quantize(vectors, "int8", ranges=saved.ranges))


@pytest.mark.parametrize(("args", "code", "needle"), [
    (("-o", "q.npy", "--output-type", "int8"), 2, "write .parquet or .jsonl"),
    (("-o", "q.parquet", "--calibration", "cal.txt"), 2, "only applies to --output-type int8"),
    (("-o", "q.parquet", "--output-type", "int8", "--calibration", "missing.txt"), 2, "cannot read the calibration"),
])  # fmt: skip
def test_bad_output_type_options_are_one_clear_line(tmp_path, floats, monkeypatch, args, code, needle):
    monkeypatch.chdir(tmp_path)
    result = invoke("encode", str(floats[0]), *args, code=code)
    assert needle in result.stderr and not (tmp_path / "q.npy").exists()
