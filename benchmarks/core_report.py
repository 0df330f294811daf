"""Print the core library's figures: parity with sentence-transformers per backbone, STS dev,
batch independence, and peak RSS while encoding 20,000 STS sentences.

    .venv/bin/python benchmarks/core_report.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from machine import cpu_line

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
STSB = ROOT / "data" / "stsb"

RSS_CHILD = """
import sys, sentemb
texts = []
for name in ("sts-train.csv", "sts-dev.csv"):
    data = sentemb.read_sts(sys.argv[1] + "/" + name)
    texts += data.sentences1 + data.sentences2
texts = (texts * 2)[:20000]  # train + dev hold 14,498; repeat to reach 20,000
vectors = sentemb.load(device="cpu").encode(texts)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (large) forking parent.
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(len(texts), vectors.shape[1], peak_kb / 1024)
"""


def main() -> None:
    import sentemb
    from tiny_models import BACKBONES, build_tiny_model, sentence_transformer

    texts = [line.split("\t")[5] for line in (STSB / "sts-dev.csv").read_text(encoding="utf-8").splitlines()[:200]]
    texts += ["", "The quick brown fox jumps over the lazy dog. " * 20]
    print(cpu_line())
    print("| backbone | max abs difference vs sentence-transformers |\n|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model_type in BACKBONES:
            folder = Path(tmp) / model_type
            folder.mkdir()
            build_tiny_model(model_type, folder)
            ours = sentemb.load(folder, device="cpu").encode(texts)
            ref = sentence_transformer(folder).encode(texts, convert_to_numpy=True)
            print(f"| {model_type} (tiny random) | {np.abs(ours - ref).max():.2e} |")

    from sentence_transformers import SentenceTransformer

    from sentemb.models.resolve import bundled_default

    encoder = sentemb.load(device="cpu")
    dev = sentemb.read_sts(STSB / "sts-dev.csv")
    unique = list(dict.fromkeys(dev.sentences1 + dev.sentences2))
    ref = SentenceTransformer(str(bundled_default()), device="cpu").encode(unique, convert_to_numpy=True)
    print(f"| all-MiniLM-L6-v2, {len(unique)} STS dev sentences | {np.abs(encoder.encode(unique) - ref).max():.2e} |")

    result = sentemb.evaluate_sts(encoder, dev.sentences1, dev.sentences2, dev.scores)
    print(f"\nSTS dev (cosine, x100): Spearman {result.spearman:.2f}, Pearson {result.pearson:.2f}")

    neighbour = "The committee met on Tuesday to discuss the budget for the coming year. " * 20
    sample = unique[:64]
    alone = np.stack([encoder.encode([t])[0] for t in sample])
    batched = encoder.encode([neighbour, *sample])[1:]
    gap = np.abs(alone - batched).max()
    print(f"batch independence: max abs difference alone vs beside a 250+ token text: {gap:.2e}")

    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(STSB)], capture_output=True, text=True, check=True)
    count, dim, rss = out.stdout.split()
    print(f"peak RSS encoding {count} STS sentences ({dim} dims), whole process: {float(rss):.0f} MB")


if __name__ == "__main__":
    main()
