"""The corpus job: plan shards on the driver, embed them on a Ray Data actor pool, commit each shard
atomically from the actor, and record it in the manifest from the driver.

Only shard descriptors and small summaries travel through Ray's object store; the vectors go
straight from each actor to the output folder, so the object store can stay small.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from sentemb.batch.io import BadRow, ShardRows, commit_bytes, commit_parquet, join, output_table, read_shard
from sentemb.batch.manifest import (
    ERRORS,
    ERRORS_DIR,
    Manifest,
    errors_name,
    fingerprint,
    make_header,
    reconcile,
    shard_entry,
)
from sentemb.batch.shards import Shard, plan, resolve_filesystem
from sentemb.config import EncoderConfig, LongText
from sentemb.errors import ConfigError, IntegrityError, InvalidInputError, SentembError

log = logging.getLogger("sentemb")

# A local instance only moves shard descriptors and summaries through the object store.
LOCAL_OBJECT_STORE_BYTES = 500_000_000
MANIFEST_EVERY_S = 2.0
LOG_EVERY_S = 15.0  # progress lines on the "sentemb" logger when there is no progress bar


@dataclass(frozen=True, kw_only=True)
class BatchJob:
    """What to embed and where; the model and its options are an :class:`EncoderConfig`."""

    input: str  # Parquet/JSONL file, folder or glob; local path or URI (s3://, gs://, hdfs://, fsspec)
    output_dir: str
    text_column: str = "text"
    id_column: str = "id"
    carry_columns: tuple[str, ...] = ()
    embedding_column: str = "embedding"
    input_format: str = "auto"  # "auto" (by file suffix), "parquet" or "jsonl"
    shard_rows: int = 10_000  # Parquet: rows per shard (cut at row groups)
    shard_bytes: int = 4 << 20  # JSONL: bytes per shard
    strict: bool = False  # stop at the first bad row instead of reporting it
    num_actors: int | None = None  # default: what the cluster's CPUs (or GPUs) allow
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0
    ray_address: str | None = None  # default: RAY_ADDRESS, else a local Ray instance
    progress: bool | None = None  # None: a bar when stderr is a terminal, else lines on the "sentemb" logger
    prompt_name: str | None = field(
        default=None, metadata={"help": "The model's prompt before each text [default: its default]."}
    )
    prompt: str | None = field(default=None, metadata={"help": "A prompt text before each text (not --prompt-name)."})

    def __post_init__(self) -> None:
        object.__setattr__(self, "carry_columns", tuple(self.carry_columns))
        carry = self.carry_columns  # may include the text column, to keep the text beside its vector
        if self.id_column == self.text_column or self.id_column in carry or len(set(carry)) != len(carry):
            raise ConfigError(
                f"id column {self.id_column!r}, text column {self.text_column!r} and carried columns "
                f"{list(carry)} must not repeat (the id is always in the output)"
            )
        if self.embedding_column in (self.id_column, *carry):
            raise ConfigError(f"embedding column {self.embedding_column!r} clashes with an input column")
        if self.num_actors is not None and self.num_actors < 1:
            raise ConfigError(f"num_actors must be at least 1, got {self.num_actors}")
        if self.num_cpus_per_actor < 0 or self.num_gpus_per_actor < 0:
            raise ConfigError("num_cpus_per_actor and num_gpus_per_actor must be >= 0")


@dataclass(frozen=True)
class BatchResult:
    """What a run did; the manifest in ``output_dir`` holds the totals across runs."""

    output_dir: str
    shards_planned: int
    shards_skipped: int  # already committed by an earlier run
    shards_written: int
    rows_written: int  # by this run
    rows_total: int  # in the output folder
    errors_total: int  # bad rows, listed in _errors.jsonl
    seconds: float
    header: dict = field(repr=False)

    @property
    def rows_per_second(self) -> float:
        return self.rows_written / self.seconds if self.seconds > 0 else 0.0


def worker_config(config: EncoderConfig, num_gpus: float) -> EncoderConfig:
    """The config each actor loads: 'auto' becomes the device the actor was given."""
    device = config.device
    if device == "auto":
        device = "cuda" if num_gpus > 0 else "cpu"
    # long_text="error": a too-long text becomes a bad row (found by truncation), not a failed shard
    long_text = LongText.TRUNCATE if config.long_text is LongText.ERROR else config.long_text
    return config.replace(device=device, show_progress=False, long_text=long_text)


class EmbedShards:
    """Ray Data callable class: loads the model once per actor, then embeds and commits whole shards."""

    def __init__(
        self, config: EncoderConfig, job: BatchJob, header: dict, *,
        in_fs: pafs.FileSystem, out_fs: pafs.FileSystem, out_dir: str,
    ) -> None:  # fmt: skip
        import sentemb

        self.encoder = sentemb.load(config.model, config=worker_config(config, job.num_gpus_per_actor))
        got = self.encoder.describe()
        for key in ("sha256", "dim", "pooling", "normalize", "max_length"):
            if got[key] != header[key]:
                raise IntegrityError(
                    f"this worker loaded {config.model!r} with {key}={got[key]!r} but the driver has "
                    f"{header[key]!r}; install the same model files on every node"
                )
        self.job, self.header, self.fingerprint = job, header, fingerprint(header)
        self.error_on_long = config.long_text is LongText.ERROR
        self.in_fs, self.out_fs, self.out_dir = in_fs, out_fs, out_dir  # resolved on the driver

    def __call__(self, batch: Any) -> dict[str, list]:
        out: dict[str, list] = {"name": [], "rows": [], "errors": [], "seconds": [], "first_bad": []}
        for item in batch.to_pylist():
            start = time.perf_counter()
            shard = Shard.from_dict(item)
            rows, errors, first_bad = self.embed(shard)
            for key, value in zip(out, (shard.name, rows, errors, time.perf_counter() - start, first_bad), strict=True):
                out[key].append(value)
        return out

    def embed(self, shard: Shard) -> tuple[int, int, str]:
        job = self.job
        rows = read_shard(self.in_fs, shard, job.id_column, job.text_column, list(job.carry_columns))
        if rows.bad and job.strict:
            return 0, len(rows.bad), rows.bad[0].to_json()
        result = self.encoder.encode_with_info(rows.texts, prompt_name=job.prompt_name, prompt=job.prompt)
        vectors, bad = result.embeddings, list(rows.bad)
        if self.error_on_long and result.truncated:
            rows, vectors, bad = _drop_long(
                rows, vectors, result.truncated, shard=shard, bad=bad, max_length=self.encoder.max_length
            )
        if bad and job.strict:
            return 0, len(bad), bad[0].to_json()
        if bad:
            text = "".join(b.to_json() + "\n" for b in bad).encode()
            commit_bytes(self.out_fs, join(self.out_dir, ERRORS_DIR), errors_name(shard.name), text)
        entry = shard_entry(shard, len(rows.texts), len(bad))
        table = output_table(rows, vectors, job.id_column, job.embedding_column)
        meta = {"fingerprint": self.fingerprint, "rows": len(rows.texts), "entry": entry}
        commit_parquet(self.out_fs, self.out_dir, shard.name, table, meta)
        return len(rows.texts), len(bad), ""


def _drop_long(
    rows: ShardRows, vectors: Any, long: list[int], *, shard: Shard, bad: list[BadRow], max_length: int
) -> tuple[ShardRows, Any, list[BadRow]]:
    import numpy as np
    import pyarrow as pa

    keep = np.ones(len(rows.texts), dtype=bool)
    keep[long] = False
    reason = f"text is longer than max_length={max_length} tokens (long_text='error')"
    bad = bad + [BadRow(rows.ids[i].as_py(), shard.path, None, reason) for i in long]
    mask = pa.array(keep)
    texts = [t for t, k in zip(rows.texts, keep, strict=True) if k]
    carry = rows.carry.filter(mask) if rows.carry.num_columns else rows.carry
    kept = ShardRows(rows.ids.filter(mask), texts, carry, [])
    return kept, vectors[keep], bad


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise ImportError("the batch job needs Ray Data: pip install 'sentemb[batch]'") from None
    return ray


def _start_ray(ray: Any, job: BatchJob) -> bool:
    """Attach to RAY_ADDRESS / job.ray_address or start a small local instance; True if we started one."""
    if ray.is_initialized():
        return False
    address = job.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return False
    ray.init(
        num_cpus=os.cpu_count() or 1,
        object_store_memory=LOCAL_OBJECT_STORE_BYTES,
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    return True


def _pool_size(ray: Any, job: BatchJob, todo: int) -> int:
    if job.num_actors is not None:
        return min(job.num_actors, todo)
    resources = ray.cluster_resources()
    if job.num_gpus_per_actor > 0:
        fit = resources.get("GPU", 0) // job.num_gpus_per_actor
    else:
        fit = resources.get("CPU", 1) // max(job.num_cpus_per_actor, 1e-9)
    return int(max(1, min(fit, todo)))


def _user_cause(exc: BaseException) -> SentembError | OSError | None:
    """The library or I/O error behind a Ray error (raised again so callers and the CLI see it as such)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (SentembError, OSError)):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    return None


def _describe(config: EncoderConfig) -> dict[str, object]:
    import sentemb

    described = sentemb.load(config.model, config=config.replace(device="cpu", show_progress=False)).describe()
    described["chunk_overlap"] = config.chunk_overlap if config.long_text is LongText.CHUNK else None
    return described


def _merge_errors(fs: pafs.FileSystem, folder: str, manifest: Manifest) -> None:
    parts = []
    for name, entry in sorted(manifest.shards.items()):
        if int(entry["errors"]):
            with fs.open_input_stream(join(join(folder, ERRORS_DIR), errors_name(name))) as handle:
                parts.append(handle.read())
    commit_bytes(fs, folder, ERRORS, b"".join(parts))


def run_batch(job: BatchJob, config: EncoderConfig | None = None) -> BatchResult:
    """Embed ``job.input`` into Parquet shards in ``job.output_dir``; a rerun finishes what is missing."""
    started = time.perf_counter()
    config = config or EncoderConfig()
    ray = _import_ray()
    columns = [job.id_column, job.text_column, *job.carry_columns]
    out_fs, out_dir = resolve_filesystem(job.output_dir)
    in_fs, planned = plan(
        job.input, input_format=job.input_format, shard_rows=job.shard_rows, shard_bytes=job.shard_bytes,
        columns=list(dict.fromkeys(columns)), exclude=out_dir,
    )  # fmt: skip
    names = {"id_column": job.id_column, "text_column": job.text_column,
             "embedding_column": job.embedding_column, "carry_columns": list(job.carry_columns)}  # fmt: skip
    header = make_header(_describe(config), names, job.shard_rows, job.shard_bytes)
    manifest, todo = reconcile(out_fs, out_dir, header, planned)
    skipped = len(planned) - len(todo)
    log.info("sentemb batch: %d shards planned, %d already done, %d to do", len(planned), skipped, len(todo))
    manifest.save(out_fs, out_dir, len(planned))
    written = rows_written = 0
    if todo:
        ours = _start_ray(ray, job)
        try:
            written, rows_written = _execute(
                ray, job, config=config, header=header, todo=todo, manifest=manifest, in_fs=in_fs,
                out_fs=out_fs, planned=len(planned),
            )
        finally:
            if ours:
                ray.shutdown()
    manifest.save(out_fs, out_dir, len(planned))
    _merge_errors(out_fs, out_dir, manifest)
    return BatchResult(
        output_dir=job.output_dir,
        shards_planned=len(planned),
        shards_skipped=skipped,
        shards_written=written,
        rows_written=rows_written,
        rows_total=sum(int(e["rows"]) for e in manifest.shards.values()),
        errors_total=sum(int(e["errors"]) for e in manifest.shards.values()),
        seconds=time.perf_counter() - started,
        header=header,
    )


def _execute(
    ray: Any, job: BatchJob, *, config: EncoderConfig, header: dict, todo: list[Shard],
    manifest: Manifest, in_fs: pafs.FileSystem, out_fs: pafs.FileSystem, planned: int,
) -> tuple[int, int]:  # fmt: skip
    from ray.data import ActorPoolStrategy, DataContext

    out_dir = resolve_filesystem(job.output_dir)[1]
    if isinstance(out_fs, pafs.LocalFileSystem) and len([n for n in ray.nodes() if n.get("Alive")]) > 1:
        log.warning("sentemb batch: %s is a local path on a multi-node cluster; every node must see the same "
                    "folder (shared filesystem), else use s3://, gs:// or hdfs://", out_dir)  # fmt: skip
    context = DataContext.get_current()
    ray_bars, context.enable_progress_bars = context.enable_progress_bars, False  # ours counts shards and rows
    by_name = {s.name: s for s in todo}
    actor_kwargs = {"config": config, "job": job, "header": header}
    actor_kwargs.update(in_fs=in_fs, out_fs=out_fs, out_dir=out_dir)
    ds = ray.data.from_items([s.to_dict() for s in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(
        EmbedShards,
        fn_constructor_kwargs=actor_kwargs,
        batch_size=1,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=_pool_size(ray, job, len(todo))),
        num_cpus=job.num_cpus_per_actor,
        num_gpus=job.num_gpus_per_actor or None,
    )
    bar = _progress_bar(job, len(todo))
    written = rows = 0
    began = last_save = last_log = time.monotonic()
    try:
        for item in ds.iter_rows():
            if item["first_bad"]:
                raise InvalidInputError(
                    f"{item['errors']} bad row(s) in shard {item['name']} and --strict is set; "
                    f"first: {item['first_bad']}"
                )
            shard = by_name[item["name"]]
            manifest.shards[shard.name] = shard_entry(shard, int(item["rows"]), int(item["errors"]))
            written += 1
            rows += int(item["rows"])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(rows=rows, refresh=False)
            elif job.progress is None and (time.monotonic() - last_log > LOG_EVERY_S or written == len(todo)):
                rate = rows / max(time.monotonic() - began, 1e-9)
                log.info("sentemb batch: %d/%d shards, %d rows, %.0f rows/s", written, len(todo), rows, rate)
                last_log = time.monotonic()
            if time.monotonic() - last_save > MANIFEST_EVERY_S:
                manifest.save(out_fs, out_dir, planned)
                last_save = time.monotonic()
    except ray.exceptions.RayError as exc:
        cause = _user_cause(exc)
        if cause is not None:
            raise cause from None
        raise
    finally:
        context.enable_progress_bars = ray_bars
        manifest.save(out_fs, out_dir, planned)
        if bar is not None:
            bar.close()
    return written, rows


def _progress_bar(job: BatchJob, total: int) -> Any:
    show = sys.stderr.isatty() if job.progress is None else job.progress
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="shard", desc="sentemb batch", dynamic_ncols=True)


def describe_result(result: BatchResult) -> str:
    """One line for humans."""
    facts = {
        "output_dir": result.output_dir,
        "shards": result.shards_planned,
        "skipped": result.shards_skipped,
        "written": result.shards_written,
        "rows_written": result.rows_written,
        "rows_total": result.rows_total,
        "errors": result.errors_total,
        "seconds": round(result.seconds, 2),
        "rows_per_second": round(result.rows_per_second, 1),
    }
    return json.dumps(facts)
