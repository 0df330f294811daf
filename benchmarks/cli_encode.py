"""Throughput and memory of `sentemb encode`, run as a user runs it (a fresh process per measurement).

    .venv/bin/python benchmarks/cli_encode.py                  # both measurements
    .venv/bin/python benchmarks/cli_encode.py --lines 20000    # a quicker memory run
    .venv/bin/python benchmarks/cli_encode.py --skip-rate --tiny   # 200,000 lines through a tiny random
                                                                   # BERT (same streaming, fast on a CPU)

1. rows/s: the unique sentences of STS train (sentence1 and sentence2) to parquet. Reported twice:
   end to end (process start, model load, encode, write) and encoding only (end to end minus the
   time the same command takes for one text).
2. peak RSS (the child's ru_maxrss from wait4) while encoding a text file of --lines lines (STS
   sentences repeated) to .npy: it stays flat because input and output are streamed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_line

ROOT = Path(__file__).resolve().parents[1]
STS_TRAIN = ROOT / "data" / "stsb" / "sts-train.csv"
SENTEMB = Path(sys.executable).with_name("sentemb")


def sts_sentences(path: Path) -> list[str]:
    seen: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 7:
            for text in (parts[5], parts[6]):
                seen.setdefault(" ".join(text.split()), None)
    return [text for text in seen if text]


def run(args: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in MiB) of one `sentemb` process."""
    started = time.perf_counter()
    process = subprocess.Popen([str(SENTEMB), *args], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"sentemb {' '.join(args)} failed")
    return seconds, usage.ru_maxrss // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000, help="lines in the memory run's input")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-rate", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="memory run with a tiny random BERT (tests/tiny_models)")
    options = parser.parse_args()
    sentences = sts_sentences(STS_TRAIN)
    print(cpu_line())
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared: numbers are noisy)")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "sts.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
        startup, base_rss = run(["encode", "--text", "warm up", "-o", str(work / "one.npy"), "--quiet"])
        print(f"one text: {startup:.1f} s (startup + model load), peak RSS {base_rss} MiB")
        if not options.skip_rate:
            total, rss = run(["encode", str(work / "sts.txt"), "-o", str(work / "sts.parquet"), "--quiet"])
            print(f"STS train unique sentences: {len(sentences):,} -> parquet in {total:.1f} s (peak RSS {rss} MiB)")
            print(f"  end to end     {len(sentences) / total:8.1f} rows/s")
            print(f"  encoding only  {len(sentences) / max(total - startup, 1e-9):8.1f} rows/s")
        if options.skip_memory:
            return
        big = work / "big.txt"
        with big.open("w", encoding="utf-8") as handle:
            for i in range(options.lines):
                handle.write(sentences[i % len(sentences)] + "\n")
        size_mb = big.stat().st_size / 2**20
        model = []
        if options.tiny:
            sys.path.insert(0, str(ROOT / "tests"))
            from tiny_models import build_tiny_model

            model = ["--model", str(build_tiny_model("bert", work / "tiny"))]
            print("memory run with a tiny random BERT (2 layers, 32 wide): the CLI's own streaming cost")
        total, rss = run(["encode", str(big), "-o", str(work / "big.npy"), "--quiet", *model])
        print(f"{options.lines:,} lines ({size_mb:.1f} MiB) -> npy in {total:.0f} s "
              f"({options.lines / total:.0f} rows/s end to end); peak RSS {rss} MiB")


if __name__ == "__main__":
    main()
