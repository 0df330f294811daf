"""How long a person waits for `sentemb info --json` and a two-sentence `sentemb similarity`.

    .venv/bin/python benchmarks/cli_startup.py            # 5 cold processes per case, median
    .venv/bin/python benchmarks/cli_startup.py --runs 9

Each run is a fresh process (`python -c "from sentemb.cli import main; main()" ...`), as typed in a
shell. "before" is the path these commands took until now: info loaded the torch backend (today's
`info --check --backend torch`), similarity ran on torch (`--backend torch`). "after" is the default
now: info reads the model folder only; similarity starts on the cached exact fp32 ONNX export. The
export is made once, up front, into a throw-away cache (SENTEMB_CACHE), as `sentemb export` or an
earlier `--backend onnx` run would have left it. Before and after runs alternate, so a busy machine
slows both alike; the ratio is median(before) / median(after).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from machine import cpu_line

PAIR = ["A man is eating food.", "A man is eating a meal."]
CASES = {
    "info --json": (["info", "--json", "--check", "--backend", "torch"], ["info", "--json"]),
    "similarity (2 texts)": (["similarity", *PAIR, "--backend", "torch"], ["similarity", *PAIR]),
}


def run(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from sentemb.cli import main; main()", *args],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cold processes per case and path")
    options = parser.parse_args()
    print(cpu_line())
    print(f"python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "SENTEMB_CACHE": cache}
        seconds = run(["export", "default", os.path.join(cache, "out")], env)
        print(f"one-time ONNX fp32 export into the cache: {seconds:.1f} s")
        for name, (before_args, after_args) in CASES.items():
            run(after_args, env)  # the first run after the export writes the digest memo
            before, after = [], []
            for _ in range(options.runs):
                before.append(run(before_args, env))
                after.append(run(after_args, env))
            b, a = statistics.median(before), statistics.median(after)
            print(
                f"{name:22s} before {b:6.2f} s   after {a:6.2f} s   {b / a:5.1f}x faster   "
                f"(median of {options.runs} cold processes each)"
            )


if __name__ == "__main__":
    main()
