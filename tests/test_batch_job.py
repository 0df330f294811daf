"""The batch job end to end on a small local Ray instance: vectors, bad rows, refusals, CLI, kill and resume."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentemb.batch import BatchJob, run_batch
from sentemb.batch.ray_cluster import private_temp_dir, shutdown
from sentemb.config import EncoderConfig
from sentemb.errors import ConfigError, InvalidInputError

pytest.importorskip("ray.data")

ROOT = Path(__file__).resolve().parents[1]
KILL_ROWS = 50_000


@pytest.fixture(scope="module")
def ray_local():
    """One small private Ray instance for this module (the jobs below use it): like the job's own, it
    never joins a Ray that runs on the machine already (address="local", its own temp dir)."""
    import ray

    temp_dir = private_temp_dir()
    ray.init(address="local", _temp_dir=temp_dir, num_cpus=2, object_store_memory=300_000_000,
             include_dashboard=False, logging_level=logging.WARNING)  # fmt: skip
    yield ray
    shutdown(ray)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, default_model_dir):
    """A randomly initialised 2-layer BERT (hidden 32) with the default model's tokenizer: fast, real path."""
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)  # fmt: skip
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(default_model_dir / name, folder / name)
    return folder


def _read(folder) -> pa.Table:
    return pq.read_table(folder).sort_by("id")


def _manifest(folder) -> dict:
    return json.loads((Path(folder) / "_manifest.json").read_text())


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


@pytest.mark.slow
def test_vectors_equal_the_library_on_sts_sentences(ray_local, tmp_path, default_encoder, sts_train_path):
    from sentemb.evaluation import read_sts

    sts = read_sts(sts_train_path)
    texts = (sts.sentences1 + sts.sentences2)[:600]
    _write_jsonl(tmp_path / "sts.jsonl", [{"id": i, "text": t, "n": len(t)} for i, t in enumerate(texts)])
    job = BatchJob(input=str(tmp_path / "sts.jsonl"), output_dir=str(tmp_path / "out"), carry_columns=("n",),
                   shard_bytes=20_000, num_actors=2)  # fmt: skip
    result = run_batch(job, EncoderConfig(device="cpu"))
    assert result.shards_planned > 1
    assert (result.rows_read, result.rows_written, result.rows_errored) == (len(texts), len(texts), 0)
    table = _read(tmp_path / "out")
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), default_encoder.dim)
    assert table.column("id").to_pylist() == list(range(len(texts)))
    assert table.column("n").to_pylist() == [len(t) for t in texts]
    got = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    want = default_encoder.encode(texts)
    # other batch neighbours and torch thread counts: the core's batch-independence bound applies
    assert np.abs(got - want).max() <= 1e-5
    header = _manifest(tmp_path / "out")["header"]
    described = default_encoder.describe().to_dict()
    for key in ("sha256", "pooling", "normalize", "max_length", "dim"):
        assert header[key] == described[key]


def test_bad_rows_are_reported_and_do_not_stop_the_job(ray_local, tmp_path, tiny_model):
    records = [{"id": f"r{i}", "text": f"row {i}"} for i in range(40)]
    records[3]["text"] = None
    records[17]["text"] = 12
    del records[25]["text"]
    records[31]["text"] = "far too long for sixteen tokens " * 4
    records[8]["text"] = "a lone surrogate \ud800 from a broken decoder"  # JSON keeps it as \\ud800
    _write_jsonl(tmp_path / "in.jsonl", records)
    pq.write_table(pa.table({"id": ["p0", "p1"], "text": ["fine", None]}), tmp_path / "more.parquet")
    job = BatchJob(input=str(tmp_path), output_dir=str(tmp_path / "out"), shard_bytes=300, num_actors=2)
    result = run_batch(job, EncoderConfig(model=str(tiny_model), max_length=16, long_text="error"))
    bad = {"r3", "r8", "r17", "r25", "r31", "p1"}
    assert (result.rows_read, result.rows_written, result.rows_errored) == (42, 42 - len(bad), len(bad))
    errors = [json.loads(line) for line in (tmp_path / "out" / "_errors.jsonl").read_text().splitlines()]
    assert {e["id"] for e in errors} == bad
    assert all(e["error"] for e in errors)
    assert "longer than max_length=16" in next(e["error"] for e in errors if e["id"] == "r31")
    assert "not valid Unicode" in next(e["error"] for e in errors if e["id"] == "r8")
    ids = _read(tmp_path / "out").column("id").to_pylist()
    assert sorted(ids) == sorted(({r["id"] for r in records} | {"p0", "p1"}) - bad)

    strict = BatchJob(input=str(tmp_path / "in.jsonl"), output_dir=str(tmp_path / "strict"), shard_bytes=300,
                      strict=True, num_actors=1)  # fmt: skip
    with pytest.raises(InvalidInputError, match=r"--strict.*\"id\": \"r(3|17|25)\""):
        run_batch(strict, EncoderConfig(model=str(tiny_model), max_length=16))


def test_cli_batch_reruns_skip_done_shards_and_refuse_other_options(ray_local, tmp_path, tiny_model,
                                                                    default_model_dir):  # fmt: skip
    from click.testing import CliRunner

    from sentemb.cli import main

    pq.write_table(pa.table({"doc": list(range(30)), "body": [f"b {i}" for i in range(30)], "lang": ["en"] * 30}),
                   tmp_path / "in.parquet", row_group_size=10)  # fmt: skip
    out = tmp_path / "out"
    args = ["batch", str(tmp_path / "in.parquet"), str(out), "--column", "body", "--id-column", "doc",
            "--carry", "lang", "--shard-rows", "10", "--model", str(tiny_model), "--max-length", "16"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert (summary["rows_read"], summary["rows_written"], summary["rows_errored"]) == (30, 30, 0)
    table = pq.read_table(out)
    assert table.column_names == ["doc", "embedding", "lang"]
    assert sorted(table.column("doc").to_pylist()) == list(range(30))
    assert len(_manifest(out)["shards"]) == 3

    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    again = CliRunner().invoke(main, args)  # nothing left to do: Ray is not even needed
    assert again.exit_code == 0, again.output
    summary = json.loads(again.output.strip().splitlines()[-1])
    assert (summary["skipped"], summary["written"], summary["rows_written"]) == (3, 0, 30)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == before

    refused = CliRunner().invoke(main, [*args[:-1], "24"])
    assert refused.exit_code == 2
    assert "different model or options (max_length: 16 there, 24 now)" in refused.output
    job = BatchJob(input=str(tmp_path / "in.parquet"), output_dir=str(out), text_column="body", id_column="doc",
                   carry_columns=("lang",), shard_rows=10)  # fmt: skip
    with pytest.raises(ConfigError, match="sha256"):
        run_batch(job, EncoderConfig(model=str(default_model_dir), max_length=16))
    assert pq.read_table(out).num_rows == 30


def _wait_for_shards(job: subprocess.Popen, count: int) -> str:
    """Block on the job's stderr until its progress bar shows ``count`` shards done (or the job ends)."""
    assert job.stderr is not None
    seen = ""
    while True:
        chunk = os.read(job.stderr.fileno(), 4096).decode(errors="replace")
        seen += chunk
        done = [int(n) for n in re.findall(r"(\d+)/\d+ \[", seen)]
        if not chunk or (done and max(done) >= count):
            return seen


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow
def test_killed_job_resumes_with_nothing_lost_or_twice(ray_local, tmp_path, tiny_model):
    import psutil

    source = tmp_path / "in"
    source.mkdir()
    rows_per_file = KILL_ROWS // 10
    for f in range(10):
        ids = np.arange(f * rows_per_file, (f + 1) * rows_per_file)
        texts = [f"passage {i} about {['cats', 'rain', 'trains', 'code'][i % 4]} and more" for i in ids]
        pq.write_table(pa.table({"id": ids, "text": texts}), source / f"in-{f}.parquet", row_group_size=500)
    out, reference = tmp_path / "out", tmp_path / "reference"
    args = ["batch", str(source), str(out), "--model", str(tiny_model), "--max-length", "16", "--shard-rows", "500",
            "--num-actors", "2", "--progress", "--quiet"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RAY_ADDRESS", None)
    job = subprocess.Popen([sys.executable, "-c", "from sentemb.cli import main; main()", *args], cwd=ROOT, env=env,
                           start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    total = KILL_ROWS // 500
    seen = _wait_for_shards(job, 5)  # the progress bar on stderr says how many shards are committed
    family = _descendants(job.pid)
    os.killpg(job.pid, signal.SIGKILL)  # the driver and everything in its session (Ray's workers)
    job.wait(timeout=30)
    for proc in family:  # Ray daemons that left the process group: the ones this job started
        if proc.is_running():
            proc.kill()
    psutil.wait_procs(family, timeout=30)
    stderr = seen + (job.stderr.read().decode(errors="replace") if job.stderr else "")
    job.stderr.close()
    committed = list(out.glob("part-*.parquet"))
    assert 5 <= len(committed) < total, f"not killed midway ({len(committed)} of {total}): {stderr[-2000:]}"

    config = EncoderConfig(model=str(tiny_model), max_length=16)
    resumed = run_batch(BatchJob(input=str(source), output_dir=str(out), shard_rows=500, num_actors=2), config)
    assert resumed.shards_skipped >= len(committed)
    assert resumed.shards_skipped + resumed.shards_written == total
    whole = run_batch(BatchJob(input=str(source), output_dir=str(reference), shard_rows=500, num_actors=2), config)
    assert whole.shards_written == total

    visible = sorted(p.name for p in out.iterdir())
    assert all(n.startswith("part-") or n in ("_manifest.json", "_errors.jsonl", "_errors") for n in visible)
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    got, want = _read(out), _read(reference)
    assert got.column("id").to_pylist() == list(range(KILL_ROWS))  # one row per input id, none twice
    assert want.column("id").to_pylist() == list(range(KILL_ROWS))
    a = np.stack(got.column("embedding").to_numpy(zero_copy_only=False))
    b = np.stack(want.column("embedding").to_numpy(zero_copy_only=False))
    assert np.abs(a - b).max() <= 1e-6
    manifest = _manifest(out)
    print(f"kill-and-resume: killed with {len(committed)}/{total} shards committed; rerun skipped "
          f"{resumed.shards_skipped}, wrote {resumed.shards_written}; max |diff| vs uninterrupted run "
          f"{np.abs(a - b).max():.1e}")  # fmt: skip
    assert manifest["complete"] is True
    assert manifest["totals"]["rows"] == KILL_ROWS
    assert sum(e["rows"] for e in manifest["shards"].values()) == KILL_ROWS


@pytest.mark.parametrize("output_type", ["int8", "binary"])
def test_output_type_packs_every_shard_with_the_same_ranges(ray_local, tmp_path, tiny_model, output_type):
    from sentemb.encoder import load
    from sentemb.retrieval.calibrate import calibration_ranges
    from sentemb.retrieval.quantize import quantize
    from sentemb.retrieval.vectors import QUANTIZE_META_KEY, read_vectors

    records = [{"id": i, "text": f"sentence number {i} about {'cats' if i % 2 else 'stocks'}"} for i in range(40)]
    _write_jsonl(tmp_path / "in.jsonl", records)
    job = BatchJob(input=str(tmp_path / "in.jsonl"), output_dir=str(tmp_path / "out"), shard_bytes=400,
                   num_actors=2, output_type=output_type)  # fmt: skip
    config = EncoderConfig(model=str(tiny_model))
    result = run_batch(job, config)
    assert result.shards_planned > 1 and result.rows_written == 40
    shards = sorted((tmp_path / "out").glob("*.parquet"))
    metas = [json.loads(pq.read_schema(p).metadata[QUANTIZE_META_KEY]) for p in shards]
    assert len(shards) > 1 and all(m == metas[0] for m in metas)  # one set of ranges for the whole job
    assert _manifest(tmp_path / "out")["header"]["output_type"] == output_type
    saved = read_vectors(tmp_path / "out")
    encoder = load(str(tiny_model), config=config)
    ranges = calibration_ranges(encoder)[0] if output_type == "int8" else None
    if ranges is not None:
        np.testing.assert_allclose(saved.ranges, ranges, atol=1e-5)
    order = np.argsort(saved.ids)
    expected = quantize(encoder.encode([r["text"] for r in records]), output_type, ranges=saved.ranges)
    assert saved.vectors.dtype == expected.dtype
    assert np.abs(saved.vectors[order].astype(int) - expected.astype(int)).max() <= (1 if ranges is not None else 0)


def test_calibration_file_sets_the_ranges_of_every_actor(ray_local, tmp_path, tiny_model):
    from sentemb.encoder import load
    from sentemb.retrieval.calibrate import calibration_ranges
    from sentemb.retrieval.quantize import quantize
    from sentemb.retrieval.vectors import QUANTIZE_META_KEY, read_vectors

    records = [{"id": i, "text": f"row {i}: {'a cat naps' if i % 3 else 'markets rally'} today"} for i in range(30)]
    _write_jsonl(tmp_path / "in.jsonl", records)
    calibration = tmp_path / "cal.txt"
    calibration.write_text("Stocks fell.\nA cat sleeps on the sofa.\nRain is expected tomorrow.\n")
    config = EncoderConfig(model=str(tiny_model))

    def job(out: str, **options: object) -> BatchJob:
        return BatchJob(input=str(tmp_path / "in.jsonl"), output_dir=str(tmp_path / out), shard_bytes=300,
                        num_actors=2, **options)  # fmt: skip

    run_batch(job("floats"), config)
    result = run_batch(job("codes", output_type="int8", calibration=str(calibration)), config)
    assert result.shards_planned > 1 and result.rows_written == 30
    floats, codes = read_vectors(tmp_path / "floats"), read_vectors(tmp_path / "codes")
    shards = sorted((tmp_path / "codes").glob("*.parquet"))
    metas = [json.loads(pq.read_schema(p).metadata[QUANTIZE_META_KEY]) for p in shards]
    assert len(shards) > 1 and all(m == metas[0] for m in metas)  # every actor: the same ranges
    assert metas[0]["calibration"] == str(calibration) and metas[0]["calibration_texts"] == 3
    encoder = load(str(tiny_model), config=config)
    np.testing.assert_allclose(codes.ranges, calibration_ranges(encoder, calibration)[0], atol=1e-5)
    assert not np.allclose(codes.ranges, calibration_ranges(encoder)[0])  # not the bundled sentences'
    by_id = {i: row for i, row in zip(floats.ids, floats.vectors, strict=True)}
    float_rows = np.stack([by_id[i] for i in codes.ids])
    assert np.array_equal(codes.vectors, quantize(float_rows, "int8", ranges=codes.ranges))
    calibration.write_text("Other texts.\nGive other ranges.\n")
    with pytest.raises(ConfigError, match="calibration_sha256"):  # never two sets of ranges in one folder
        run_batch(job("codes", output_type="int8", calibration=str(calibration)), config)
    with pytest.raises(ConfigError, match="output_type"):
        run_batch(job("codes"), config)


@pytest.mark.parametrize(("args", "needle"), [
    (("--calibration", "cal.txt"), "only applies to output_type int8"),
    (("--output-type", "int8", "--calibration", "missing.txt"), "cannot read the calibration file"),
])  # fmt: skip
def test_cli_calibration_mistakes_are_one_line_before_ray_starts(tmp_path, monkeypatch, args, needle):
    from cli_helpers import invoke

    monkeypatch.chdir(tmp_path)
    (tmp_path / "cal.txt").write_text("one\ntwo\n")
    _write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "text": "hello"}])
    result = invoke("batch", "in.jsonl", "out", *args, code=2)
    assert needle in result.stderr and not (tmp_path / "out").exists()
