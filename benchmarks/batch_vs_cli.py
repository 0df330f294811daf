"""Rows/s of `sentemb batch` (Ray Data) against `sentemb encode` and the library, on the STS train sentences.

    .venv/bin/python benchmarks/batch_vs_cli.py [--rows N] [--num-actors K] [--max-length L]

Four numbers, same input (STS train sentence1 + sentence2, as JSONL with ids), same model and options:

- library: ``Encoder.encode`` in this process, model already loaded (the ceiling);
- encode CLI: ``sentemb encode in.jsonl -o out.parquet``, wall time of the whole command;
- batch CLI: ``sentemb batch in.jsonl out/``, wall time of the whole command (starts a local Ray instance);
- batch warm: ``run_batch`` on an already running local Ray (like attaching to a cluster): planning,
  actor start-up and model load per actor, embedding and committing shards.

The gap between them is the framework overhead. It pays off when there are more cores or machines
than one process can use; on a 2-core machine expect the batch job to be slower.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_line

ROOT = Path(__file__).resolve().parents[1]
STS_TRAIN = ROOT / "data" / "stsb" / "sts-train.csv"
SENTEMB = [sys.executable, "-c", "from sentemb.cli import main; main()"]


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="Use the first N sentences [default: all].")
    parser.add_argument("--num-actors", type=int, default=None, help="Batch actors [default: one per CPU].")
    parser.add_argument("--max-length", type=int, default=None, help="Tokens per text [default: the model's].")
    parser.add_argument("--sts", type=Path, default=STS_TRAIN, help="STS benchmark file (tab separated).")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for the library and `sentemb encode` (OMP_NUM_THREADS); batch actors "
                             "always get one thread per CPU they hold [default: torch's choice].")  # fmt: skip
    return parser.parse_args()


def main() -> None:
    args = _args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported

    import torch

    from sentemb.evaluation import read_sts

    sts = read_sts(args.sts)
    texts = (sts.sentences1 + sts.sentences2)[: args.rows]
    results = _measure(texts, args)
    print(cpu_line())
    print(f"{len(texts):,} STS train sentences, {os.cpu_count()} CPUs, max_length={args.max_length or 'model'}, "
          f"library/encode threads={torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'':44s} {'seconds':>8s} {'rows/s':>8s}")
    for name, seconds in results.items():
        print(f"{name:44s} {seconds:8.1f} {len(texts) / seconds:8.0f}")


def _measure(texts: list[str], args: argparse.Namespace) -> dict[str, float]:
    """Seconds for the same texts through the library, `sentemb encode`, `sentemb batch` and `run_batch`."""
    import ray

    import sentemb
    from sentemb.batch import BatchJob, run_batch

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RAY_ADDRESS", None)
    options = ["--max-length", str(args.max_length)] if args.max_length else []
    actors = ["--num-actors", str(args.num_actors)] if args.num_actors else []
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sentemb-bench-") as tmp:
        source = Path(tmp) / "sts.jsonl"
        source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
        # enough shards to keep every actor busy: about four per CPU
        shard_bytes = max(4096, source.stat().st_size // (4 * (os.cpu_count() or 1)) + 1)

        encoder = sentemb.load(device="cpu", max_length=args.max_length)
        encoder.encode(texts[:64])  # warm-up
        start = time.perf_counter()
        encoder.encode(texts)
        results["library (model loaded)"] = time.perf_counter() - start
        del encoder

        cmd = [*SENTEMB, "encode", str(source), "--field", "text", "--id-field", "id", "-o",
               str(Path(tmp) / "cli.parquet"), "--device", "cpu", "--quiet", *options]  # fmt: skip
        results["sentemb encode (whole command)"] = _timed(cmd, env)

        cmd = [*SENTEMB, "batch", str(source), str(Path(tmp) / "batch-cli"), "--device", "cpu", "--quiet",
               "--no-progress", "--shard-bytes", str(shard_bytes), *actors, *options]  # fmt: skip
        results["sentemb batch (whole command, local Ray)"] = _timed(cmd, env)

        ray.init(num_cpus=os.cpu_count(), object_store_memory=500_000_000, include_dashboard=False,
                 logging_level=logging.WARNING)  # fmt: skip
        try:
            config = sentemb.EncoderConfig(device="cpu", max_length=args.max_length)
            job = BatchJob(input=str(source), output_dir=str(Path(tmp) / "batch-warm"), num_actors=args.num_actors,
                           shard_bytes=shard_bytes, progress=False)  # fmt: skip
            results["run_batch (Ray already running)"] = run_batch(job, config).seconds
        finally:
            ray.shutdown()
    return results


if __name__ == "__main__":
    main()
