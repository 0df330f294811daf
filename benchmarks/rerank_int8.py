"""int8 recipes for a cross-encoder: which MatMuls stay fp32, on ONNX Runtime (dynamic) and OpenVINO (static),
each against sentence-transformers fp32 for speed and fidelity, on rerank_bench.py's model and pairs.

    PYTHONPATH=src .venv/bin/python benchmarks/rerank_int8.py --rounds 2 --pairs 600
    PYTHONPATH=src .venv/bin/python benchmarks/rerank_int8.py --candidates onnx:none openvino:feed-forward

A candidate is ``runtime:roles`` (roles of sentemb.export.keep_fp32 joined by "+", or "none": every MatMul
int8); each is exported once into the export cache under its own key. Rows: pairs/s and its ratio to
CrossEncoder.predict (torch fp32, batch 32) over interleaved rounds (median), then against that row's
scores: Spearman, the share of queries whose top 10 come in the same order / are the same 10 / have the
same best passage, and the median |score difference|. Last, how small a score error must be for the
top-10 goal: the fp32 scores with Gaussian noise added, and the smallest gap inside each query's top 10.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator

import numpy as np
from machine import cpu_line
from rerank_bench import CANDIDATES, MODEL_DIR, STSB, Method, build_queries, st_method, top10_same, top10_set_same

DEFAULT = ["onnx:fp32", "openvino:fp32", "onnx:none", "onnx:feed-forward", "onnx:attention-output+feed-forward",
           "openvino:none", "openvino:feed-forward", "openvino:attention-output+feed-forward",
           "openvino:head", "openvino:layer:-1"]  # fmt: skip


@contextlib.contextmanager
def kept_fp32(roles: tuple[str, ...]) -> Iterator[None]:
    """The reranker kind's MatMuls kept fp32 set to ``roles`` while a candidate loads (its recipe, its key)."""
    from sentemb.export import recipe

    before = recipe.KEEP_FP32.get("rerank", ())
    recipe.KEEP_FP32["rerank"] = roles
    try:
        yield
    finally:
        recipe.KEEP_FP32["rerank"] = before


def candidate(spec: str) -> Method:
    """``runtime:fp32`` or ``runtime:roles`` as a loaded, warmed-up reranker."""
    import sentemb

    runtime, _, what = spec.partition(":")
    roles = () if what in ("none", "fp32") else tuple(what.split("+"))
    precision = "fp32" if what == "fp32" else "int8"
    started = time.perf_counter()
    with kept_fp32(roles):
        reranker = sentemb.load_reranker(str(MODEL_DIR), device="cpu", backend=runtime, precision=precision)
    label = f"sentemb {runtime} fp32" if precision == "fp32" else f"sentemb {runtime} int8, fp32 kept: {what}"
    print(f"loaded {label} in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return Method(label, lambda pairs: reranker.predict(pairs, show_progress=False))


def run_rounds(methods: list[Method], pairs: list[tuple[str, str]], rounds: int) -> None:
    for method in methods:
        method.predict(pairs[:64])
    for k in range(rounds):
        for method in methods:
            started = time.perf_counter()
            method.scores = np.asarray(method.predict(pairs), dtype=np.float32)
            method.times.append(time.perf_counter() - started)
        print(f"round {k + 1}/{rounds} done", file=sys.stderr, flush=True)


def best_same(scores: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean(scores.reshape(-1, CANDIDATES).argmax(1) == reference.reshape(-1, CANDIDATES).argmax(1)))


def table(methods: list[Method], n_pairs: int) -> None:
    from sentemb.evaluation import correlations

    base = methods[0]
    assert base.scores is not None
    base_rate = n_pairs / statistics.median(base.times)
    print("| method | pairs/s | vs ST (rounds) | Spearman vs ST fp32 | top-10 order same | top-10 set same "
          "| best same | median abs diff |\n|---|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    for m in methods:
        assert m.scores is not None
        rate = n_pairs / statistics.median(m.times)
        ratios = [b / t for t, b in zip(m.times, base.times, strict=True)]
        rho = correlations(m.scores, base.scores)[0] / 100
        diff = float(np.median(np.abs(m.scores - base.scores)))
        print(f"| {m.label} | {rate:.0f} | {rate / base_rate:.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | {rho:.5f} "
              f"| {top10_same(m.scores, base.scores):.0%} | {top10_set_same(m.scores, base.scores):.0%} "
              f"| {best_same(m.scores, base.scores):.0%} | {diff:.4f} |", flush=True)  # fmt: skip


def tolerance(reference: np.ndarray) -> None:
    """How large a score error the top-10 goal tolerates on these scores."""
    top = -np.sort(-reference.reshape(-1, CANDIDATES), axis=1)[:, :11]
    smallest = (-np.diff(top, axis=1)).min(axis=1)  # the closest neighbours among the 10 best (and the 11th)
    print(f"\nsmallest score gap inside a query's top 10 (+ the 11th): median {np.median(smallest):.5f}; "
          + ", ".join(f"< {x:g} for {np.mean(smallest < x):.0%}" for x in (1e-4, 1e-3, 1e-2)))  # fmt: skip
    rng = np.random.default_rng(0)
    for sigma in (1e-5, 1e-4, 3e-4, 1e-3, 3e-3):
        noisy = [top10_same(reference + rng.normal(0, sigma, reference.shape).astype(np.float32), reference)
                 for _ in range(20)]  # fmt: skip
        print(f"fp32 scores + Gaussian noise, sigma {sigma:g} (median abs diff {0.674 * sigma:.5f}): "
              f"top-10 order same {np.mean(noisy):.0%}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=1500, help=f"{CANDIDATES} per query [1500]")
    parser.add_argument("--candidates", nargs="+", default=DEFAULT, help="runtime:fp32 or runtime:roles|none")
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    if not (MODEL_DIR / "config.json").is_file():
        sys.exit(f"no cross-encoder in {MODEL_DIR}: run benchmarks/rerank_bench.py once to train it")
    queries = build_queries(MODEL_DIR, STSB, max(1, args.pairs // CANDIDATES))
    pairs = [(q, p) for q, passages in queries for p in passages]
    methods = [st_method("sentence-transformers CrossEncoder.predict torch fp32 (batch 32)", MODEL_DIR)]
    methods += [candidate(spec) for spec in args.candidates]
    run_rounds(methods, pairs, args.rounds)
    print(f"\n{len(pairs)} pairs ({len(queries)} queries x {CANDIDATES} passages of 60-120 tokens), {args.rounds} "
          "interleaved rounds (median); 1.00x and the fidelity reference: the first row\n")  # fmt: skip
    table(methods, len(pairs))
    assert methods[0].scores is not None
    tolerance(methods[0].scores)


if __name__ == "__main__":
    main()
