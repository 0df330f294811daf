"""Does the packed (padding-free) layout pay for the torch-free builder on ONNX Runtime?

The default model on ONNX Runtime, STS dev sentences in batches of 32, in the order they come (the
server's and the batch job's micro-batches) and sorted by length (how `encode` plans them):

* builder    -- the torch-free builder's padded graph, as the base install runs it (no ORT fusion)
* builder+f  -- the same graph through ORT's transformer fusions
* torch+f    -- torch.onnx's padded graph with ORT's fusions, as the [all] install runs it
* packed     -- torch.onnx's packed graph (:mod:`sentemb.export.packed`, what OpenVINO runs)

    .venv/bin/python benchmarks/light_packed.py [--sentences 1024] [--rounds 2]

Needs torch (for the two torch.onnx graphs). Prints sentences/s, the ratio to ``builder`` and the
largest |difference| of mean-pooled vectors from ``builder``'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from bench import STSB, unique_sentences
from machine import cpu_line

BATCH = 32


def batches(folder: Path, texts: list[str], ordered: bool) -> list[dict[str, np.ndarray]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    tokenizer.no_padding()
    encoded = tokenizer.encode_batch(texts)
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i].ids)) if ordered else list(range(len(texts)))
    out = []
    for start in range(0, len(order), BATCH):
        rows = [encoded[i] for i in order[start : start + BATCH]]
        width = max(len(r.ids) for r in rows)
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros_like(ids)
        for j, row in enumerate(rows):
            ids[j, : len(row.ids)], mask[j, : len(row.ids)] = row.ids, 1
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    return out


def build(work: Path) -> dict[str, Path]:
    import sentemb
    from sentemb.config import Precision
    from sentemb.export import onnx_builder
    from sentemb.export.onnx_graph import fuse
    from sentemb.export.recipe import recipe_for
    from sentemb.export.torch_onnx import export_torch

    spec = sentemb.load(device="cpu").spec
    recipe = recipe_for(spec, Precision.FP32, "onnx")
    paths = {name: work / f"{name}.onnx" for name in ("builder", "builder+f", "torch", "torch+f", "packed")}
    onnx_builder.build_onnx(spec, recipe, paths["builder"], True)
    fuse(paths["builder"], paths["builder+f"], "bert")
    export_torch(spec, dataclasses.replace(recipe, graph="padded"), paths["torch"], True, False)
    fuse(paths["torch"], paths["torch+f"], "bert")
    export_torch(spec, dataclasses.replace(recipe, graph="packed"), paths["packed"], True, False)
    del paths["torch"]
    return paths


def run(session, feeds: list[dict[str, np.ndarray]]) -> tuple[float, np.ndarray]:
    names = {i.name for i in session.get_inputs()}
    start, pooled = time.perf_counter(), []
    for feed in feeds:
        (hidden,) = session.run(None, {k: v for k, v in feed.items() if k in names})
        mask = feed["attention_mask"][:, :, None].astype(np.float32)
        pooled.append((hidden * mask).sum(1) / mask.sum(1))
    return time.perf_counter() - start, np.concatenate(pooled)


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(cpu_line())
    texts = unique_sentences(STSB / "sts-dev.csv", args.sentences)
    with tempfile.TemporaryDirectory() as tmp:
        import sentemb

        folder = sentemb.load(device="cpu").spec.transformer_dir
        paths = build(Path(tmp))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        cpu = ["CPUExecutionProvider"]
        sessions = {n: ort.InferenceSession(str(p), options, providers=cpu) for n, p in paths.items()}
        print(f"{len(texts)} STS dev sentences, batches of {BATCH}, onnxruntime {ort.__version__}, "
              f"best of {args.rounds}")  # fmt: skip
        for ordered in (False, True):
            feeds = batches(folder, texts, ordered)
            padding = 1 - sum(f["attention_mask"].sum() for f in feeds) / sum(f["attention_mask"].size for f in feeds)
            best = {name: float("inf") for name in sessions}
            vectors: dict[str, np.ndarray] = {}
            for session in sessions.values():
                run(session, feeds[:2])  # warm-up
            for _ in range(args.rounds):
                for name, session in sessions.items():  # alternate, so drift hits every graph alike
                    took, vectors[name] = run(session, feeds)
                    best[name] = min(best[name], took)
            label = "sorted by length" if ordered else "as they come"
            print(f"\n{label} ({padding:.0%} of the tokens are padding)")
            for name in sessions:
                rate = len(texts) / best[name]
                diff = float(np.abs(vectors[name] - vectors["builder"]).max())
                ratio = best["builder"] / best[name]
                print(f"  {name:10s} {rate:8.1f} sentences/s  x{ratio:.2f}  max|diff| {diff:.1e}")


if __name__ == "__main__":
    main()
