"""How close exact fp32 encoding comes to this CPU's fp32 matrix-product peak.

Exact encoding cannot beat the CPU's fp32 arithmetic, so its speed is best judged against that peak.
In interleaved rounds this times one large fp32 matrix product (torch, all cores: the best a BLAS gets
from these cores) and sentemb's exact backends on held-out STS sentences, and
turns each encoding rate into the GFLOP/s of the model's linear layers (2 x weights per token, layer
by layer, on the real tokens; attention's own products are left out, so the figure is a floor).

    .venv/bin/python benchmarks/matmul_peak.py [--limit 3000] [--rounds 3] [--size 4096]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench import STSB, held_out_sentences
from machine import cpu_line


def linear_flops_per_token(config_json: Path) -> float:
    """2 x the weights of a BERT-style layer stack's linear layers (Q, K, V, output, two feed-forward)."""
    config = json.loads(config_json.read_text(encoding="utf-8"))
    hidden, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    return 2.0 * layers * (4 * hidden * hidden + 2 * hidden * inner)


def real_tokens(tokenizer_json: Path, texts: list[str], max_length: int) -> int:
    """Tokens the model runs on (special tokens included, truncated as encoding does)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return sum(len(encoding.ids) for encoding in tokenizer.encode_batch(texts))


def matmul_gflops(size: int) -> float:
    """One fp32 (size x size) @ (size x size) product, GFLOP/s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    start = time.perf_counter()
    torch.mm(a, b)
    return 2.0 * size**3 / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=4096, help="side of the square fp32 product [4096]")
    parser.add_argument("--backend", action="append", help="exact backends to time [torch, onnx, openvino]")
    args = parser.parse_args()
    import sentemb

    print(cpu_line(), flush=True)
    texts = held_out_sentences(STSB / "sts-train.csv", args.limit)
    backends = args.backend or ("torch", "onnx", "openvino")
    encoders = {name: sentemb.load(backend=name, precision="fp32") for name in backends}
    first = next(iter(encoders.values()))
    folder = first.spec.transformer_dir
    tokens = real_tokens(folder / "tokenizer.json", texts, first.max_length)
    flops = linear_flops_per_token(folder / "config.json")
    peak: list[float] = []
    rates: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(args.rounds):
        peak.append(max(matmul_gflops(args.size) for _ in range(3)))
        for name, encoder in encoders.items():
            start = time.perf_counter()
            encoder.encode(texts)
            rates[name].append(len(texts) / (time.perf_counter() - start))
    best = statistics.median(peak)
    print(f"{len(texts)} held-out STS sentences, {tokens / len(texts):.1f} tokens each; "
          f"{flops / 1e6:.1f} MFLOP per token in the linear layers; {args.rounds} rounds, median")  # fmt: skip
    spread = f"rounds {min(peak):.0f}-{max(peak):.0f}"
    print(f"fp32 matmul peak ({args.size}^3, torch, all cores): {best:.0f} GFLOP/s ({spread})")
    for name, values in rates.items():
        rate = statistics.median(values)
        achieved = rate * tokens / len(texts) * flops / 1e9
        share = f"{achieved / best:.0%} of the peak"
        print(f"sentemb {name} fp32: {rate:.0f} sentences/s = {achieved:.0f} GFLOP/s = {share}")


if __name__ == "__main__":
    main()
