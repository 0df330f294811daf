"""The batch job's planning, reading, manifest and resume rules: no Ray, no model."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from sentemb.batch import BatchJob
from sentemb.batch.io import commit_parquet, read_shard
from sentemb.batch.manifest import MANIFEST, Manifest, fingerprint, reconcile, shard_entry
from sentemb.batch.shards import list_inputs, plan
from sentemb.errors import ConfigError

FS = pafs.LocalFileSystem()


def _write_jsonl(path, records, trailing_newline=True):
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + ("\n" if trailing_newline else ""), encoding="utf-8")


def _ids(shards, id_column="id", text_column="text"):
    out, bad = [], []
    for shard in shards:
        rows = read_shard(FS, shard, id_column, text_column, [])
        out.extend(rows.ids.to_pylist())
        bad.extend(b.id for b in rows.bad)
    return out, bad


@pytest.mark.parametrize("shard_bytes", [1, 7, 60, 333, 10**6])
@pytest.mark.parametrize("trailing_newline", [True, False])
def test_jsonl_byte_ranges_read_every_line_exactly_once(tmp_path, shard_bytes, trailing_newline):
    records = [{"id": i, "text": "x" * (i * 37 % 200)} for i in range(120)]
    lines = [json.dumps(r) for r in records]
    lines.insert(40, "")  # blank lines are skipped, not errors
    lines.insert(80, "   ")
    path = tmp_path / "in.jsonl"
    _write_jsonl(path, lines, trailing_newline)
    _, shards = plan(str(path), input_format="auto", shard_rows=10, shard_bytes=shard_bytes, columns=["id", "text"])
    assert [s.start for s in shards] == list(range(0, path.stat().st_size, shard_bytes))
    ids, bad = _ids(shards)
    assert ids == [r["id"] for r in records]
    assert bad == []


def test_parquet_shards_cut_at_row_groups_and_split_big_groups(tmp_path):
    path = tmp_path / "in.parquet"
    sizes = [100, 100, 350, 30, 30]
    with pq.ParquetWriter(path, pa.schema([("id", pa.int64()), ("text", pa.string())])) as writer:
        start = 0
        for size in sizes:
            ids = list(range(start, start + size))
            writer.write_table(pa.table({"id": ids, "text": [f"t{i}" for i in ids]}))
            start += size
    _, shards = plan(str(path), input_format="auto", shard_rows=120, shard_bytes=1, columns=["id", "text"])
    ranges = [(s.start, s.stop) for s in shards]
    # two groups of 100 would exceed 120 together; 350 is split in three; the two 30s join
    assert ranges == [(0, 100), (100, 200), (200, 316), (316, 433), (433, 550), (550, 610)]
    ids, _ = _ids(shards)
    assert ids == list(range(sum(sizes)))
    assert len({s.name for s in shards}) == len(shards)


def test_shard_names_are_deterministic_per_input_file(tmp_path):
    for name in ("a.jsonl", "b.jsonl"):
        _write_jsonl(tmp_path / name, [{"id": i, "text": "t"} for i in range(50)])
    first = plan(str(tmp_path), input_format="auto", shard_rows=10, shard_bytes=200, columns=["id", "text"])[1]
    again = plan(str(tmp_path), input_format="auto", shard_rows=10, shard_bytes=200, columns=["id", "text"])[1]
    assert [s.name for s in first] == [s.name for s in again]
    prefixes = {s.name.rsplit("-", 1)[0] for s in first}
    assert len(prefixes) == 2
    assert all(s.name.startswith("part-") and s.name.endswith(".parquet") for s in first)


def test_inputs_from_folder_glob_and_uri(tmp_path):
    (tmp_path / "sub").mkdir()
    pq.write_table(pa.table({"id": [1], "text": ["a"]}), tmp_path / "a.parquet")
    _write_jsonl(tmp_path / "sub" / "b.jsonl", [{"id": 2, "text": "b"}])
    for ignored in ("_SUCCESS", ".tmp-x.jsonl", "notes.txt"):
        (tmp_path / ignored).write_text("{}\n")
    names = lambda files: sorted(f.base_name for f in files)  # noqa: E731
    assert names(list_inputs(str(tmp_path))[1]) == ["a.parquet", "b.jsonl"]
    assert names(list_inputs(f"{tmp_path}/*.parquet")[1]) == ["a.parquet"]
    assert names(list_inputs(f"{tmp_path}/**/*.jsonl")[1]) == ["b.jsonl"]
    assert names(list_inputs(f"file://{tmp_path}")[1]) == ["a.parquet", "b.jsonl"]
    (tmp_path / "out").mkdir()  # an output folder inside the input folder is never read as input
    pq.write_table(pa.table({"id": [1], "embedding": [[0.5]]}), tmp_path / "out" / "part-0.parquet")
    assert names(list_inputs(str(tmp_path), exclude=str(tmp_path / "out"))[1]) == ["a.parquet", "b.jsonl"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_inputs(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no Parquet or JSONL"):
        list_inputs(f"{tmp_path}/*.csv")


def test_missing_column_is_refused_before_any_work(tmp_path):
    pq.write_table(pa.table({"id": [1], "body": ["a"]}), tmp_path / "a.parquet")
    with pytest.raises(ConfigError, match=r"no column\(s\) \['text'\]"):
        plan(str(tmp_path), input_format="auto", shard_rows=10, shard_bytes=10, columns=["id", "text"])


def test_jsonl_columns_are_checked_on_a_sample_of_records(tmp_path):
    _write_jsonl(tmp_path / "a.jsonl", [{"id": 1, "body": "no text field"}, {"id": 2, "body": "x"}])
    with pytest.raises(ConfigError, match=r"no column\(s\) \['text'\]"):
        plan(str(tmp_path), input_format="auto", shard_rows=10, shard_bytes=10, columns=["id", "text"])
    _write_jsonl(tmp_path / "a.jsonl", [{"id": 1}, {"id": 2, "text": "only some records have it"}])
    assert plan(str(tmp_path), input_format="auto", shard_rows=10, shard_bytes=10, columns=["id", "text"])[1]


def test_job_refuses_clashing_column_names():
    with pytest.raises(ConfigError, match="must not repeat"):
        BatchJob(input="in", output_dir="out", id_column="text")
    with pytest.raises(ConfigError, match="clashes"):
        BatchJob(input="in", output_dir="out", carry_columns=("embedding",))
    with pytest.raises(ConfigError, match="num_actors"):
        BatchJob(input="in", output_dir="out", num_actors=0)
    assert BatchJob(input="in", output_dir="out", carry_columns=["text"]).carry_columns == ("text",)


def test_bad_rows_are_separated_with_their_ids(tmp_path):
    pq.write_table(pa.table({"id": ["a", "b", None, "d"], "text": ["ok", None, "x", "fine"]}), tmp_path / "p.parquet")
    _write_jsonl(
        tmp_path / "j.jsonl",
        [{"id": 1, "text": "ok"}, {"id": 2, "text": None}, {"id": 3, "text": 7}, {"id": 4}, "{not json", "[1]"],
    )
    _, shards = plan(str(tmp_path), input_format="auto", shard_rows=10, shard_bytes=1000, columns=["id", "text"])
    by_format = {s.format: read_shard(FS, s, "id", "text", []) for s in shards}
    parquet, jsonl = by_format["parquet"], by_format["jsonl"]
    assert parquet.ids.to_pylist() == ["a", "d"]
    assert parquet.texts == ["ok", "fine"]
    assert [(b.id, b.row, b.error) for b in parquet.bad] == [("b", 1, "text is null"), (None, 2, "id is null")]
    assert jsonl.ids.to_pylist() == [1]
    assert [b.id for b in jsonl.bad] == [2, 3, 4, None, None]
    assert "text is int" in jsonl.bad[1].error
    assert json.loads(jsonl.bad[0].to_json())["byte_offset"] > 0

    pq.write_table(pa.table({"id": [1, 2], "text": [3, 4]}), tmp_path / "p.parquet")
    shard = next(s for s in plan(str(tmp_path / "p.parquet"), input_format="auto", shard_rows=10, shard_bytes=1,
                                 columns=["id", "text"])[1])  # fmt: skip
    rows = read_shard(FS, shard, "id", "text", [])
    assert rows.texts == []
    assert {b.error for b in rows.bad} == {"text is int64, not a string"}


HEADER = {"model": "m", "sha256": {"model.safetensors": "abc"}, "dim": 4, "pooling": "mean", "normalize": True,
          "max_length": 32, "long_text": "truncate", "precision": "fp32", "backend": "torch", "chunk_overlap": None,
          "id_column": "id", "text_column": "text", "embedding_column": "embedding", "carry_columns": [],
          "format_version": 1, "shard_rows": 10, "shard_bytes": 100}  # fmt: skip


def _planned(tmp_path, rows=30):
    _write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": f"text {i}"} for i in range(rows)])
    return plan(str(tmp_path / "in.jsonl"), input_format="auto", shard_rows=10, shard_bytes=100, columns=["id"])[1]


def _commit(out, shard, header, rows=1):
    meta = {"fingerprint": fingerprint(header), "rows": rows, "entry": shard_entry(shard, rows, 0)}
    commit_parquet(FS, str(out), shard.name, pa.table({"id": list(range(rows))}), meta)


def test_reconcile_adopts_committed_shards_and_removes_temporary_files(tmp_path):
    planned = _planned(tmp_path)
    out = tmp_path / "out"
    manifest, todo = reconcile(FS, str(out), HEADER, planned)
    assert todo == planned
    manifest.shards[planned[0].name] = shard_entry(planned[0], 1, 0)
    _commit(out, planned[0], HEADER)
    manifest.save(FS, str(out), len(planned))
    _commit(out, planned[1], HEADER)  # committed, then killed before the manifest write
    (out / f".tmp-123-{planned[2].name}").write_bytes(b"half a file")
    manifest, todo = reconcile(FS, str(out), HEADER, planned)
    assert [s.name for s in todo] == [s.name for s in planned[2:]]
    assert set(manifest.shards) == {planned[0].name, planned[1].name}
    assert not list(out.glob(".tmp-*"))
    (out / planned[0].name).unlink()  # listed in the manifest but gone: redone
    _, todo = reconcile(FS, str(out), HEADER, planned)
    assert planned[0] in todo


def test_reconcile_refuses_other_options_changed_inputs_and_foreign_shards(tmp_path):
    planned = _planned(tmp_path)
    out = tmp_path / "out"
    manifest, _ = reconcile(FS, str(out), HEADER, planned)
    manifest.shards[planned[0].name] = shard_entry(planned[0], 1, 0)
    _commit(out, planned[0], HEADER)
    manifest.save(FS, str(out), len(planned))
    with pytest.raises(ConfigError, match=r"different model or options \(max_length: 32 there, 64 now\)"):
        reconcile(FS, str(out), {**HEADER, "max_length": 64}, planned)
    with pytest.raises(ConfigError, match="sha256"):
        reconcile(FS, str(out), {**HEADER, "sha256": {"model.safetensors": "other"}}, planned)
    assert reconcile(FS, str(out), {**HEADER, "model": "same weights, other name"}, planned)[1] == planned[1:]

    (out / MANIFEST).unlink()  # without a manifest, the footer of a shard still refuses a mix
    with pytest.raises(ConfigError, match="different model or options"):
        reconcile(FS, str(out), {**HEADER, "normalize": False}, planned)

    Manifest(HEADER, {planned[0].name: shard_entry(planned[0], 1, 0)}).save(FS, str(out), len(planned))
    with (tmp_path / "in.jsonl").open("a") as handle:
        handle.write(json.dumps({"id": 99, "text": "appended"}) + "\n")
    replanned = plan(str(tmp_path / "in.jsonl"), input_format="auto", shard_rows=10, shard_bytes=100,
                     columns=["id"])[1]  # fmt: skip
    with pytest.raises(ConfigError, match="changed since"):
        reconcile(FS, str(out), HEADER, replanned)
    _write_jsonl(tmp_path / "other.jsonl", [{"id": 1, "text": "t"}])
    other = plan(str(tmp_path / "other.jsonl"), input_format="auto", shard_rows=10, shard_bytes=100, columns=["id"])[1]
    with pytest.raises(ConfigError, match="not in this run"):
        reconcile(FS, str(out), HEADER, other)


def test_import_sentemb_does_not_import_ray():
    code = "import sys, sentemb, sentemb.batch, sentemb.cli.batch; print('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "False"


def test_missing_ray_names_the_extra(monkeypatch):
    from sentemb.batch.ray_cluster import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'sentemb\[batch\]'"):
        import_ray()


def test_the_header_describes_dense_heads_truncation_and_the_prompt(tmp_path):
    """The driver's header (no backend) has the width after Dense and truncate_dim, and the prompt text,
    so a resumed job cannot mix vectors of another head, width or prompt."""
    from sentemb.batch.manifest import fingerprint, make_header
    from sentemb.batch.model import describe_job_model
    from sentemb.config import EncoderConfig
    from st_shapes import PROMPTS, SHAPES, build_st_folder
    from tiny_models import build_tiny_model

    backbone = build_tiny_model("bert", tmp_path / "backbone")
    folder = build_st_folder(backbone, SHAPES["two_dense"], tmp_path / "dense")
    config = EncoderConfig(model=str(folder), device="cpu")
    plain = describe_job_model(config, 0)
    assert plain["dim"] == SHAPES["two_dense"].dense[-1][0] and plain["prompt_text"] == ""
    assert describe_job_model(config.replace(truncate_dim=4), 0)["dim"] == 4
    query = describe_job_model(config, 0, prompt_name="query")
    assert query["prompt_text"] == PROMPTS["query"]
    headers = [make_header(d, {}, 1, 1) for d in (plain, query, describe_job_model(config.replace(truncate_dim=4), 0))]
    assert len({fingerprint(h) for h in headers}) == 3
