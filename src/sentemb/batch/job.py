"""The corpus job: plan shards on the driver, embed them on a Ray Data actor pool, commit each shard
atomically from the actor, and record it in the manifest from the driver.

Only shard descriptors and small summaries travel through Ray's object store; the vectors go
straight from each actor to the output folder, so the object store can stay small.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

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
from sentemb.batch.model import check_worker, describe_job_model, worker_config
from sentemb.batch.ray_cluster import import_ray, ray_session
from sentemb.batch.shards import Shard, plan, resolve_filesystem
from sentemb.batch.sparse_model import describe_sparse_job_model, load_sparse_worker, sparse_columns, sparse_table
from sentemb.batch.spec import BatchJob, BatchResult
from sentemb.config import EncoderConfig, LongText
from sentemb.errors import InvalidInputError, InvalidTextError, SentembError
from sentemb.machine import Machine

log = logging.getLogger("sentemb")

MANIFEST_EVERY_S = 2.0
LOG_EVERY_S = 15.0  # progress lines on the "sentemb" logger when there is no progress bar


class EmbedShards:
    """Ray Data callable class: loads the model once per actor, then embeds and commits whole shards."""

    def __init__(
        self, config: EncoderConfig, job: BatchJob, header: dict, *,
        in_fs: pafs.FileSystem, out_fs: pafs.FileSystem, out_dir: str, calibration: Calibration | None = None,
    ) -> None:  # fmt: skip
        import sentemb

        # An error here is kept and raised by the first call: Ray hands a call's error to the driver as
        # itself (one line for the user), but an __init__ error only as text inside ActorDiedError.
        self.failed: SentembError | None = None
        try:
            worker = worker_config(config, job.num_gpus_per_actor, Machine.here())
            if job.sparse_model is not None:  # a SPLADE model: sparse rows, the same checks
                self.encoder: Any = load_sparse_worker(config, worker, job, header)
            else:
                encoder = sentemb.load(config.model, config=worker)
                check_worker(encoder, config, header, job.num_gpus_per_actor)
                self.encoder = encoder
        except SentembError as exc:
            self.failed = exc
        self.job, self.header, self.fingerprint = job, header, fingerprint(header)
        self.ranges, self.calibration = None, calibration
        if self.failed is None and calibration is not None:  # int8/uint8: the driver's texts, this encoder
            from sentemb.retrieval.calibrate import ranges_from_texts

            prompt = self.encoder.resolve_prompt(prompt_name=job.prompt_name, prompt=job.prompt)
            self.ranges = ranges_from_texts(self.encoder, calibration.texts, prompt)
        self.error_on_long = config.long_text is LongText.ERROR
        self.in_fs, self.out_fs, self.out_dir = in_fs, out_fs, out_dir  # resolved on the driver

    def __call__(self, batch: Any) -> dict[str, list]:
        if self.failed is not None:
            raise self.failed
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
        rows, vectors, truncated = self._encode(rows, shard)
        bad = list(rows.bad)
        if self.error_on_long and truncated:
            reason = f"text is longer than max_length={self.encoder.max_length} tokens (long_text='error')"
            keep = _keep_mask(len(rows.texts), truncated)
            rows, vectors = _without(rows, truncated, reason, shard), _kept(vectors, keep)
            bad = list(rows.bad)
        if bad and job.strict:
            return 0, len(bad), bad[0].to_json()
        if bad:
            text = "".join(b.to_json() + "\n" for b in bad).encode()
            commit_bytes(self.out_fs, join(self.out_dir, ERRORS_DIR), errors_name(shard.name), text)
        entry = shard_entry(shard, len(rows.texts), len(bad))
        if job.sparse_model is not None:
            table = sparse_table(rows, vectors, job.id_column)
        else:
            table = output_table(rows, vectors, job.id_column, job.embedding_column)
        if job.output_type != "float32":
            table = quantized_table(table, vectors, job, self.ranges, self.calibration)
        meta = {"fingerprint": self.fingerprint, "rows": len(rows.texts), "entry": entry}
        commit_parquet(self.out_fs, self.out_dir, shard.name, table, meta)
        return len(rows.texts), len(bad), ""

    def _encode(self, rows: ShardRows, shard: Shard) -> tuple[ShardRows, Any, list[int]]:
        """Vectors of the good rows; a text that is not valid Unicode becomes a bad row like any other."""
        job = self.job
        while True:
            try:
                result = self.encoder.encode_with_info(rows.texts, prompt_name=job.prompt_name, prompt=job.prompt)
            except InvalidTextError as exc:
                reason = str(exc).replace(f"texts[{exc.index}]", "text", 1)
                rows = _without(rows, [exc.index], reason, shard)
                continue
            return rows, result.embeddings, [i for i, item in enumerate(result.info) if item.truncated]


@dataclass(frozen=True)
class Calibration:
    """The int8/uint8 calibration texts, read once on the driver and sent to every actor, and their source."""

    texts: list[str]
    facts: dict[str, Any]


def read_job_calibration(job: BatchJob) -> Calibration | None:
    """``job.calibration`` (or the bundled sentences) for int8/uint8 output; None for other output types."""
    if job.output_type not in ("int8", "uint8"):
        return None
    from sentemb.retrieval.calibrate import read_calibration

    return Calibration(*read_calibration(job.calibration))


def output_facts(output_type: str, calibration: Calibration | None) -> dict[str, object]:
    """What the header records of the output type: int8/uint8 ranges come from calibration texts named by hash
    (the texts, not their path: the same file elsewhere resumes the job, an edited one is refused)."""
    if output_type == "float32":
        return {}
    if calibration is None:
        return {"output_type": output_type}
    return {"output_type": output_type, "calibration_sha256": calibration.facts["calibration_sha256"]}


def quantized_table(table: Any, vectors: Any, job: BatchJob, ranges: Any, calibration: Calibration | None) -> Any:
    """``table`` with its embedding column replaced by the packed codes, the ranges in the schema metadata."""
    import pyarrow as pa

    from sentemb.retrieval.quantize import quantize
    from sentemb.retrieval.vectors import quantize_metadata

    codes = quantize(vectors, job.output_type, ranges=ranges)
    column = pa.FixedSizeListArray.from_arrays(pa.array(codes.reshape(-1)), codes.shape[1])
    where = table.column_names.index(job.embedding_column)
    table = table.set_column(where, job.embedding_column, column)
    extra = calibration.facts if calibration is not None else None
    return table.replace_schema_metadata(quantize_metadata(job.output_type, vectors.shape[1], ranges, extra))


def _kept(vectors: Any, keep: Any) -> Any:
    """The rows of ``vectors`` (a dense array or sparse vectors) where ``keep`` is true."""
    import numpy as np

    return vectors[keep] if isinstance(vectors, np.ndarray) else vectors.take(np.flatnonzero(keep))


def _keep_mask(count: int, drop: list[int]) -> Any:
    import numpy as np

    keep = np.ones(count, dtype=bool)
    keep[drop] = False
    return keep


def _without(rows: ShardRows, drop: list[int], reason: str, shard: Shard) -> ShardRows:
    """``rows`` less the rows at ``drop`` (positions among the good rows), which join the bad ones."""
    import pyarrow as pa

    keep = _keep_mask(len(rows.texts), drop)
    bad = [*rows.bad, *(BadRow(rows.ids[i].as_py(), shard.path, None, reason) for i in drop)]
    mask = pa.array(keep)
    texts = [t for t, k in zip(rows.texts, keep, strict=True) if k]
    carry = rows.carry.filter(mask) if rows.carry.num_columns else rows.carry
    return ShardRows(rows.ids.filter(mask), texts, carry, bad)


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
        inner = getattr(seen, "cause", None)  # Ray's task errors: the original (their class mimics it)
        if not isinstance(inner, BaseException) and isinstance(seen, (SentembError, OSError)):
            return seen
        seen = inner if isinstance(inner, BaseException) else seen.__cause__
    return None


def _merge_errors(fs: pafs.FileSystem, folder: str, manifest: Manifest) -> None:
    parts = []
    for name, entry in sorted(manifest.shards.items()):
        if int(entry["errors"]):
            with fs.open_input_stream(join(join(folder, ERRORS_DIR), errors_name(name))) as handle:
                parts.append(handle.read())
    commit_bytes(fs, folder, ERRORS, b"".join(parts))


def run_batch(
    job: BatchJob, config: EncoderConfig | None = None, *, progress_file: IO[str] | None = None
) -> BatchResult:
    """Embed ``job.input`` into Parquet shards in ``job.output_dir``; a rerun finishes what is missing.

    The progress bar (``job.progress``) is drawn on ``progress_file`` (default: ``sys.stderr``).
    """
    started = time.perf_counter()
    config = config or EncoderConfig()
    if job.sparse_model is not None:
        config = config.replace(model=job.sparse_model)
    ray = import_ray()
    columns = [job.id_column, job.text_column, *job.carry_columns]
    calibration = read_job_calibration(job)  # before any work: a missing file fails at once
    out_fs, out_dir = resolve_filesystem(job.output_dir)
    in_fs, planned = plan(
        job.input, input_format=job.input_format, shard_rows=job.shard_rows, shard_bytes=job.shard_bytes,
        columns=list(dict.fromkeys(columns)), exclude=out_dir,
    )  # fmt: skip
    names = {"id_column": job.id_column, "text_column": job.text_column,
             "embedding_column": job.embedding_column, "carry_columns": list(job.carry_columns),
             **output_facts(job.output_type, calibration)}  # fmt: skip
    if job.sparse_model is not None:
        names = sparse_columns(job)
        described = describe_sparse_job_model(config, job.num_gpus_per_actor, max_active_dims=job.max_active_dims,
                                              prompt_name=job.prompt_name, prompt=job.prompt)  # fmt: skip
    else:
        described = describe_job_model(config, job.num_gpus_per_actor, prompt_name=job.prompt_name, prompt=job.prompt)
    header = make_header(described, names, job.shard_rows, job.shard_bytes)
    manifest, todo = reconcile(out_fs, out_dir, header, planned)
    skipped = len(planned) - len(todo)
    log.info("sentemb batch: %d shards planned, %d already done, %d to do", len(planned), skipped, len(todo))
    manifest.save(out_fs, out_dir, len(planned))
    written = embedded = 0
    if todo:
        with ray_session(ray, job.ray_address):
            run = _Run(ray, job, config=config, header=header, manifest=manifest, out_fs=out_fs, planned=len(planned),
                       calibration=calibration)  # fmt: skip
            written, embedded = run.execute(todo, in_fs, _progress_bar(job, len(todo), progress_file))
    manifest.save(out_fs, out_dir, len(planned))
    _merge_errors(out_fs, out_dir, manifest)
    rows = sum(int(e["rows"]) for e in manifest.shards.values())
    errors = sum(int(e["errors"]) for e in manifest.shards.values())
    return BatchResult(
        output_dir=job.output_dir,
        shards_planned=len(planned),
        shards_skipped=skipped,
        shards_written=written,
        rows_read=rows + errors,
        rows_written=rows,
        rows_errored=errors,
        rows_embedded=embedded,
        seconds=time.perf_counter() - started,
        header=header,
    )


class _Run:
    """One run's shards on the actor pool, recorded in the manifest as they finish."""

    def __init__(
        self, ray: Any, job: BatchJob, *, config: EncoderConfig, header: dict, manifest: Manifest,
        out_fs: pafs.FileSystem, planned: int, calibration: Calibration | None,
    ) -> None:  # fmt: skip
        self.ray, self.job, self.config, self.header, self.manifest = ray, job, config, header, manifest
        self.calibration = calibration
        self.out_fs, self.out_dir, self.planned = out_fs, resolve_filesystem(job.output_dir)[1], planned

    def execute(self, todo: list[Shard], in_fs: pafs.FileSystem, bar: Any) -> tuple[int, int]:
        """(shards, rows) written; the user's error behind a Ray error is raised as itself."""
        from ray.data import DataContext

        context = DataContext.get_current()
        ray_bars, context.enable_progress_bars = context.enable_progress_bars, False  # ours counts shards, rows
        # An error of ours inside an actor reaches the driver as itself, not as "UDF failed" text.
        original, context.raise_original_map_exception = context.raise_original_map_exception, True
        try:
            return self._collect(self._dataset(todo, in_fs).iter_rows(), {s.name: s for s in todo}, bar)
        except self.ray.exceptions.RayError as exc:
            cause = _user_cause(exc)
            if cause is None:
                raise
            if cause.args and isinstance(cause.args[0], str):  # Ray Data appends its retry advice
                cause.args = (cause.args[0].split("\nFailed to apply UDF", 1)[0], *cause.args[1:])
            raise cause from None
        finally:
            context.enable_progress_bars, context.raise_original_map_exception = ray_bars, original
            self.manifest.save(self.out_fs, self.out_dir, self.planned)
            if bar is not None:
                bar.close()

    def _dataset(self, todo: list[Shard], in_fs: pafs.FileSystem) -> Any:
        from ray.data import ActorPoolStrategy

        ray, job = self.ray, self.job
        if isinstance(self.out_fs, pafs.LocalFileSystem) and len([n for n in ray.nodes() if n.get("Alive")]) > 1:
            log.warning("sentemb batch: %s is a local path on a multi-node cluster; every node must see the same "
                        "folder (shared filesystem), else use s3://, gs:// or hdfs://", self.out_dir)  # fmt: skip
        actor_kwargs = {"config": self.config, "job": job, "header": self.header, "calibration": self.calibration}
        actor_kwargs.update(in_fs=in_fs, out_fs=self.out_fs, out_dir=self.out_dir)
        ds = ray.data.from_items([s.to_dict() for s in todo], override_num_blocks=len(todo))
        return ds.map_batches(
            EmbedShards,
            fn_constructor_kwargs=actor_kwargs,
            batch_size=1,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=_pool_size(ray, job, len(todo))),
            num_cpus=job.num_cpus_per_actor,
            num_gpus=job.num_gpus_per_actor or None,
        )

    def _collect(self, items: Iterator[dict], by_name: dict[str, Shard], bar: Any) -> tuple[int, int]:
        written = rows = 0
        began = last_save = last_log = time.monotonic()
        for item in items:
            if item["first_bad"]:
                raise InvalidInputError(
                    f"{item['errors']} bad row(s) in shard {item['name']} and --strict is set; "
                    f"first: {item['first_bad']}"
                )
            shard = by_name[item["name"]]
            self.manifest.shards[shard.name] = shard_entry(shard, int(item["rows"]), int(item["errors"]))
            written += 1
            rows += int(item["rows"])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(rows=rows, refresh=False)
            elif self.job.progress is None and (time.monotonic() - last_log > LOG_EVERY_S or written == len(by_name)):
                rate = rows / max(time.monotonic() - began, 1e-9)
                log.info("sentemb batch: %d/%d shards, %d rows, %.0f rows/s", written, len(by_name), rows, rate)
                last_log = time.monotonic()
            if time.monotonic() - last_save > MANIFEST_EVERY_S:
                self.manifest.save(self.out_fs, self.out_dir, self.planned)
                last_save = time.monotonic()
        return written, rows


def _progress_bar(job: BatchJob, total: int, file: IO[str] | None) -> Any:
    file = file or sys.stderr
    show = file.isatty() if job.progress is None else job.progress
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="shard", desc="sentemb batch", dynamic_ncols=True, file=file)
