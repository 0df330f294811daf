"""The corpus job on Ray Data: ``run_batch(BatchJob(input=..., output_dir=...), EncoderConfig(...))``.

Input Parquet/JSONL is cut into deterministic shards; each becomes one Parquet file in the output
folder, written atomically by a Ray actor that loaded the model once; ``_manifest.json`` records the
model and options and every committed shard, so a rerun of the same command only does what is missing.
Ray is imported when a job runs (``pip install 'sentemb[batch]'``), never by ``import sentemb``.
"""

from __future__ import annotations

from sentemb.batch.job import run_batch
from sentemb.batch.spec import BatchJob, BatchResult

__all__ = ["BatchJob", "BatchResult", "run_batch"]
