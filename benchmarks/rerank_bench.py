"""Cross-encoders: sentence-transformers, every sentemb backend and the peers scoring the same
(query, passage) pairs in one process, then ``POST /v1/rerank`` alone and beside an embedding load.

    PYTHONPATH=src .venv-peers/bin/python benchmarks/rerank_bench.py          # with the peers' rows
    PYTHONPATH=src .venv/bin/python benchmarks/rerank_bench.py --rounds 3 --pairs 1500 --no-server

The model: all-MiniLM-L6-v2's weights under a new one-label head, fine-tuned for one epoch on the
STS train pairs (label = score / 5, batch 16) with sentence-transformers' own CrossEncoder fit loop,
as its STS-B example does; saved to --model-dir and reused from there. Its STS dev Spearman (scores
of the dev pairs against the gold scores) is printed.

Speed: each query is an STS train sentence with CANDIDATES passages of 60-120 tokens; a passage
starts with a sentence that shares words with the query (as a first-stage retriever would pick it)
and goes on with random STS sentences. Each method is warmed up, then the rounds are interleaved as
in bench.py and the median counts; 1.00x is CrossEncoder.predict (torch fp32, its batch of 32).
Fidelity is against that row's scores: Spearman over all pairs, and the share of queries whose
top-10 documents come in the same order.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from machine import cpu_line
from rerank_model import dev_spearman, train

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # 2 cores: tokenizer threads only compete
HERE = Path(__file__).resolve().parent
STSB = HERE.parent / "data" / "stsb"
MODEL_DIR = Path.home() / ".cache" / "sentemb-bench" / "minilm-l6-stsb-cross-encoder"
CANDIDATES = 30  # passages per query: top-10 agreement needs at least 20
PASSAGE_TOKENS = (60, 120)
SENTEMB_ROWS = [("torch", "fp32"), ("onnx", "fp32"), ("openvino", "fp32"), ("auto", "fp32"),
                ("onnx", "int8"), ("openvino", "int8"), ("auto", "int8"),
                ("openvino", "int8 + fp32 rescoring"), ("auto", "int8 + fp32 rescoring")]  # fmt: skip
TOP_K = 10  # the ranking each query asks for: what int8 + fp32 rescoring makes exact
SKIPPED: list[tuple[str, str]] = []  # (row, why it could not run here)
Pairs = list[tuple[str, str]]


@dataclass
class Method:
    label: str
    predict: Callable[[Pairs], np.ndarray]
    times: list[float] = field(default_factory=list)
    scores: np.ndarray | None = None


def words(text: str) -> set[str]:
    return {w.strip(".,;:!?\"'()").lower() for w in text.split() if len(w) > 3}


def build_queries(model_dir: Path, data: Path, n_queries: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """``n_queries`` (query, CANDIDATES passages): each passage leads with one of the sentences that
    share the most words with the query, then random STS sentences until it has 60-120 tokens."""
    from tokenizers import Tokenizer

    import sentemb

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    sts = sentemb.read_sts(data / "sts-train.csv")
    pool = list(dict.fromkeys(sts.sentences1 + sts.sentences2))
    length = {s: len(tokenizer.encode(s, add_special_tokens=False).ids) for s in pool}
    index: dict[str, list[int]] = defaultdict(list)
    for i, sentence in enumerate(pool):
        for word in words(sentence):
            index[word].append(i)
    rng = random.Random(seed)
    queries = []
    for query in rng.sample(sorted(set(sts.sentences1)), n_queries):
        shared = Counter(j for word in words(query) for j in index[word])
        best = sorted(shared, key=lambda j: (-shared[j], j))  # ties by pool order: no hash order involved
        leads = [pool[j] for j in best[: CANDIDATES + 1] if pool[j] != query][:CANDIDATES]
        leads += rng.sample(pool, CANDIDATES - len(leads))  # a query with few words in common
        queries.append((query, [passage(lead, pool, length, rng) for lead in leads]))
    return queries


def passage(lead: str, pool: list[str], length: dict[str, int], rng: random.Random) -> str:
    low, high = PASSAGE_TOKENS
    target = rng.randint(low, high)
    parts, tokens, misses = [lead], length[lead], 0
    while tokens < target and (tokens < low or misses < 100):  # near the top, no sentence may be short enough
        filler = rng.choice(pool)
        if tokens + length[filler] <= high:
            parts.append(filler)
            tokens += length[filler]
        else:
            misses += 1
    return " ".join(parts)


def st_method(label: str, folder: Path, backend: str = "torch") -> Method:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(folder), device="cpu", backend=backend)
    return Method(label, lambda pairs: np.asarray(model.predict(pairs, show_progress_bar=False)))


def sentemb_methods(model_dir: Path) -> list[Method]:
    import sentemb

    methods = []
    for backend, precision in SENTEMB_ROWS:
        label = f"sentemb {backend} {precision}"
        started = time.perf_counter()
        rescore = "rescoring" in precision
        try:
            reranker = sentemb.load_reranker(str(model_dir), device="cpu", backend=backend,
                                             precision=precision.split()[0], rescore=rescore)  # fmt: skip
        except sentemb.SentembError as exc:  # a backend this machine lacks: a row that says why
            SKIPPED.append((label, str(exc)))
            continue
        if backend == "auto":
            label += f" -> {reranker.backend}"
        if rescore and reranker.rescorer is not None:
            label += f" (top {TOP_K}, margin {reranker.rescorer.margin:.3f})"
        print(f"loaded {label} in {time.perf_counter() - started:.0f} s", flush=True)
        run = ranked if rescore else (lambda r, pairs: r.predict(pairs, show_progress=False))
        methods.append(Method(label, lambda pairs, r=reranker, run=run: run(r, pairs)))
    return methods


def ranked(reranker: Any, pairs: Pairs) -> np.ndarray:
    """Scores as ``rank(query, passages, top_k=TOP_K)`` computes them, query by query."""
    from sentemb.rerank import activate

    logits = []
    for i in range(0, len(pairs), CANDIDATES):
        passages = pairs[i : i + CANDIDATES]
        int8 = reranker.predict(passages, activation="identity", show_progress=False)
        logits.append(reranker.rescorer.rescore(passages, int8, TOP_K))
    return activate(np.concatenate(logits).reshape(-1, 1), reranker.activation, False)


def st_onnx_folder(model_dir: Path) -> Path:
    """sentence-transformers' ONNX export of the model (via optimum), saved beside it and reused."""
    from sentence_transformers import CrossEncoder

    folder = model_dir.with_name(model_dir.name + "-st-onnx")
    if not (folder / "onnx" / "model.onnx").is_file():
        CrossEncoder(str(model_dir), device="cpu", backend="onnx").save_pretrained(str(folder))
    return folder


def fastembed_method(folder: Path) -> Method:
    """fastembed's TextCrossEncoder on sentence-transformers' ONNX file, registered as a custom model;
    its default batch of 64. It returns logits: the same order as the sigmoid's scores."""
    from fastembed.common.model_description import ModelSource
    from fastembed.rerank.cross_encoder import TextCrossEncoder

    name = "local/sentemb-bench-cross-encoder"
    TextCrossEncoder.add_custom_model(model=name, sources=ModelSource(hf="local/none"), model_file="onnx/model.onnx")
    model = TextCrossEncoder(model_name=name, specific_model_path=str(folder))

    def run(pairs: Pairs) -> np.ndarray:
        return np.fromiter(model.rerank_pairs(pairs), dtype=np.float32, count=len(pairs))

    # fastembed cuts pairs at the stricter of tokenizer_config.json's model_max_length and max_length
    tokenizer = getattr(model.model, "tokenizer", None)
    cut = (tokenizer.truncation or {}).get("max_length") if tokenizer is not None else "?"
    return Method(f"fastembed TextCrossEncoder (ST's ONNX file, custom model; cuts pairs at {cut} tokens)", run)


def peer_methods(model_dir: Path) -> list[Method]:
    """The peers' rows that this venv can run; each one that cannot is recorded in SKIPPED."""
    methods = []
    rows = [("sentence-transformers CrossEncoder onnx fp32", lambda: st_method(
                "sentence-transformers CrossEncoder onnx fp32", st_onnx_folder(model_dir), "onnx")),
            ("fastembed TextCrossEncoder", lambda: fastembed_method(st_onnx_folder(model_dir)))]  # fmt: skip
    for label, build in rows:
        try:
            methods.append(build())
        except Exception as exc:  # any failure of a peer (absent, wrong version) is a row that says why
            lines = [line for line in str(exc).splitlines() if line.strip()]
            SKIPPED.append((label, f"{type(exc).__name__}: {lines[-1][:160] if lines else ''}"))
    return methods


def time_rounds(methods: list[Method], pairs: Pairs, rounds: int) -> None:
    """Warm every method up, then round 1 of each, round 2 of each, ...; the last round's scores are kept."""
    for method in methods:
        method.predict(pairs[:64])
    for k in range(rounds):
        for method in methods:
            started = time.perf_counter()
            method.scores = np.asarray(method.predict(pairs), dtype=np.float32)
            method.times.append(time.perf_counter() - started)
        print(f"round {k + 1}/{rounds}: {sum(m.times[-1] for m in methods):.0f} s", file=sys.stderr, flush=True)


def top10(scores: np.ndarray) -> np.ndarray:
    """Each query's (row of CANDIDATES scores) 10 best documents, best first."""
    return np.argsort(-scores.reshape(-1, CANDIDATES), axis=1, kind="stable")[:, :10]


def top10_same(scores: np.ndarray, reference: np.ndarray) -> float:
    """Share of queries whose 10 best documents come in the reference's order."""
    return float(np.mean(np.all(top10(scores) == top10(reference), axis=1)))


def top10_set_same(scores: np.ndarray, reference: np.ndarray) -> float:
    """Share of queries whose 10 best documents are the reference's, in any order."""
    return float(np.mean(np.all(np.sort(top10(scores), axis=1) == np.sort(top10(reference), axis=1), axis=1)))


def speed_table(methods: list[Method], n_pairs: int, rounds: int) -> dict[str, tuple[float, float, float]]:
    """Print the speed table; return per label (ratio to ST, Spearman to ST fp32, top-10 share)."""
    from sentemb.evaluation import correlations

    base = methods[0]
    assert base.scores is not None
    base_rate = n_pairs / statistics.median(base.times)
    print(f"\n{n_pairs} pairs ({n_pairs // CANDIDATES} queries x {CANDIDATES} passages of 60-120 tokens), "
          f"{rounds} interleaved rounds (median); 1.00x = {base.label}\n")  # fmt: skip
    print("| method | pairs/s | vs ST | rounds vs ST | Spearman vs ST fp32 | top-10 order same | top-10 set same |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    results = {}
    for method in methods:
        assert method.scores is not None
        rate = n_pairs / statistics.median(method.times)
        ratios = [b / m for m, b in zip(method.times, base.times, strict=True)]
        rho = correlations(method.scores, base.scores)[0] / 100
        same = top10_same(method.scores, base.scores)
        results[method.label] = (rate / base_rate, rho, same)
        print(f"| {method.label} | {rate:.0f} | {rate / base_rate:.2f}x | {min(ratios):.2f}-{max(ratios):.2f}x "
              f"| {rho:.5f} | {same:.0%} | {top10_set_same(method.scores, base.scores):.0%} |", flush=True)  # fmt: skip
    for label, why in SKIPPED:
        print(f"| {label} | skipped: {why} ||||||")
    return results


def goals(results: dict[str, tuple[float, float, float]], vnni: bool) -> None:
    """The issue's goals, each against the rows it names."""
    exact = {k: v for k, v in results.items() if k.startswith("sentemb") and "fp32" in k and "int8" not in k}
    int8 = {k: v for k, v in results.items() if k.startswith("sentemb") and "int8" in k}
    fastembed = next((v[0] for k, v in results.items() if k.startswith("fastembed")), None)
    print("\ngoals:")
    for label, (ratio, _, _) in exact.items():
        ahead = "no fastembed row" if fastembed is None else f"fastembed {fastembed:.2f}x"
        print(f"  {label}: {ratio:.2f}x (goal >= 1.5x: {'met' if ratio >= 1.5 else 'not met'}; {ahead}: "
              f"{'ahead' if fastembed is not None and ratio > fastembed else 'not ahead'})")  # fmt: skip
    for label, (ratio, rho, same) in int8.items():
        print(f"  {label}: {ratio:.2f}x (>= 3x{'' if vnni else ', no VNNI here'}: {'met' if ratio >= 3 else 'not met'})"
              f", top-10 same {same:.0%} (>= 95%: {'met' if same >= 0.95 else 'not met'}), Spearman {rho:.4f} "
              f"(>= 0.99: {'met' if rho >= 0.99 else 'not met'})")  # fmt: skip


def latencies(client: object, bodies: list[dict], count: int, alive: Callable[[], bool] = lambda: True) -> list[float]:
    """Seconds per ``POST /v1/rerank``, one request at a time, at most ``count`` and while ``alive()``."""
    times = []
    for body in bodies[:count]:
        if not alive():
            break
        started = time.perf_counter()
        response = client.post("/v1/rerank", json=body)  # type: ignore[attr-defined]
        response.raise_for_status()
        times.append(time.perf_counter() - started)
    return times


def start_load(url: str, seconds: float, clients: int) -> subprocess.Popen:
    """serve_load.py in another process: ``clients`` closed-loop clients sending 1-4 STS sentences to
    /v1/embeddings for ``seconds`` (after its 2 s warm-up), then it prints its rates and stops."""
    command = [sys.executable, str(HERE / "serve_load.py"), "--url", url, "--clients", str(clients),
               "--duration", f"{seconds:.0f}"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def server(model_dir: Path, queries: list[tuple[str, list[str]]], requests: int, clients: int) -> None:
    """p50/p95 of ``POST /v1/rerank`` of 100 documents alone and beside an embedding load; one process
    serves both models, each on ``backend='auto'`` fp32."""
    import httpx

    import sentemb
    from sentemb.server import ServerSettings, serve_in_background

    encoder = sentemb.load(device="cpu", backend="auto")
    reranker = sentemb.load_reranker(str(model_dir), device="cpu", backend="auto")
    settings = ServerSettings(port=0, drain_seconds=0, access_log=False, model_names=("all-MiniLM-L6-v2",))
    docs = [p for _, passages in queries for p in passages]
    bodies = [{"query": q, "documents": [docs[(k * 100 + i) % len(docs)] for i in range(100)], "top_n": 10}
              for k, (q, _) in enumerate(queries * (2 * requests // len(queries) + 1))]  # fmt: skip
    with (
        serve_in_background(encoder, settings, rerankers=[reranker]) as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        latencies(client, bodies, 3)  # warm-up
        alone = latencies(client, bodies, requests)
        seconds = min(120.0, max(20.0, 4 * requests * statistics.median(alone)))
        load = start_load(url, seconds, clients)
        time.sleep(5)  # its start-up and warm-up
        beside = latencies(client, bodies[requests:], requests, alive=lambda: load.poll() is None)
        output, _ = load.communicate(timeout=seconds + 120)
    print(f"\nserver: POST /v1/rerank, 100 documents of 60-120 tokens, top_n 10; reranker {reranker.backend} "
          f"fp32, embedding model {encoder.backend} fp32, one process on 127.0.0.1\n")  # fmt: skip
    print("| phase | requests | p50 ms | p95 ms | pairs/s at p50 |")
    print("|---|---:|---:|---:|---:|")
    for phase, times in (("rerank alone, sequential", alone),
                         (f"rerank beside {clients} embedding clients (serve_load.py)", beside)):  # fmt: skip
        p50, p95 = np.percentile(times, 50) * 1000, np.percentile(times, 95) * 1000
        print(f"| {phase} | {len(times)} | {p50:.0f} | {p95:.0f} | {100_000 / p50:.0f} |")
    wanted = ("requests/s", "latency", "status counts")
    print("embedding load beside it: " + "; ".join(
        line.strip() for line in output.splitlines() if line.startswith(wanted)))  # fmt: skip


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=1500, help="pairs timed, --candidates per query [1500]")
    parser.add_argument("--candidates", type=int, default=CANDIDATES, help=f"passages per query [{CANDIDATES}]")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR, help=f"the trained cross-encoder [{MODEL_DIR}]")
    parser.add_argument("--skip-train", action="store_true", help="use --model-dir as it is; never train")
    parser.add_argument("--no-server", action="store_true", help="skip the server section")
    parser.add_argument("--requests", type=int, default=30, help="rerank requests per server phase [30]")
    parser.add_argument("--clients", type=int, default=8, help="embedding clients beside the reranks [8]")
    parser.add_argument("--data", type=Path, default=STSB, help="folder with sts-train.csv and sts-dev.csv")
    return parser.parse_args()


def main() -> None:
    global CANDIDATES  # noqa: PLW0603 - every helper reads the passages per query from here
    args = _args()
    CANDIDATES = args.candidates
    print(cpu_line(), flush=True)
    from sentemb.machine import Machine

    trained = (args.model_dir / "config.json").is_file()
    if not trained and args.skip_train:
        sys.exit(f"--skip-train: no cross-encoder in {args.model_dir}")
    if not trained:
        train(args.model_dir, args.data)
    import sentence_transformers

    print(f"model: {args.model_dir} (sentence-transformers {sentence_transformers.__version__} here)")
    print(f"STS dev Spearman of the cross-encoder: {dev_spearman(args.model_dir, args.data):.2f}", flush=True)
    queries = build_queries(args.model_dir, args.data, max(1, args.pairs // CANDIDATES))
    pairs = [(q, p) for q, passages in queries for p in passages]
    methods = [st_method("sentence-transformers CrossEncoder.predict torch fp32 (batch 32)", args.model_dir)]
    methods += sentemb_methods(args.model_dir) + peer_methods(args.model_dir)
    time_rounds(methods, pairs, args.rounds)
    results = speed_table(methods, len(pairs), args.rounds)
    goals(results, "avx512_vnni" in Machine.here().flags or "avx_vnni" in Machine.here().flags)
    if not args.no_server:
        server(args.model_dir, queries, args.requests, args.clients)


if __name__ == "__main__":
    main()
