"""How close exact fp32 (or int8) encoding comes to this CPU's fp32 (or int8) matrix-product peak.

Encoding cannot beat the CPU's arithmetic, so its speed is best judged against that peak. In
interleaved rounds this times one large matrix product on all cores (fp32: torch, the best a BLAS gets
from these cores; int8: one OpenVINO int8 FullyConnected quantised by NNCF, as sentemb's int8 layers
are, two streams) and sentemb's backends of that precision on held-out STS sentences, and turns each
encoding rate into the GFLOP/s (GOP/s) of the model's linear layers (2 x weights per token, layer by
layer, on the real tokens; attention's own products are left out, so the figure is a floor).

    .venv/bin/python benchmarks/matmul_peak.py [--precision int8] [--limit 3000] [--rounds 3] [--size 4096]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
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


def int8_product(size: int) -> Callable[[], float]:
    """A timer of one int8 (size x size) @ (size x size) OpenVINO product per stream, GOP/s; built once."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    from sentemb.scoped import env_var, quiet, quiet_console

    rng = np.random.default_rng(0)
    x = ops.parameter([1, size, size], np.float32, name="x")
    weights = ops.constant((rng.standard_normal((size, size)) * 0.05).astype(np.float32))
    sample = rng.standard_normal((1, size, size)).astype(np.float32)
    with env_var("NNCF_CI", "1"):
        import nncf
    with quiet("nncf"), quiet_console():
        model = nncf.quantize(ov.Model([ops.matmul(x, weights, False, True)], [x]), nncf.Dataset([sample]),
                              subset_size=1, model_type=nncf.ModelType.TRANSFORMER)  # fmt: skip
    compiled = ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
    streams = ov.AsyncInferQueue(compiled, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))

    def gops(products: int = 8 * len(streams)) -> float:
        start = time.perf_counter()
        for _ in range(products):
            streams.start_async({0: sample})
        streams.wait_all()
        return 2.0 * size**3 * products / (time.perf_counter() - start) / 1e9

    gops(len(streams))
    return gops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    parser.add_argument("--size", type=int, default=None, help="side of the square product [4096 fp32, 2048 int8]")
    parser.add_argument("--backend", action="append", help="backends to time [torch, onnx, openvino; int8: no torch]")
    args = parser.parse_args()
    import sentemb

    print(cpu_line(), flush=True)
    int8 = args.precision == "int8"
    size = args.size or (2048 if int8 else 4096)
    product = int8_product(size) if int8 else lambda: matmul_gflops(size)
    texts = held_out_sentences(STSB / "sts-train.csv", args.limit)
    backends = args.backend or (("onnx", "openvino") if int8 else ("torch", "onnx", "openvino"))
    encoders = {name: sentemb.load(backend=name, precision=args.precision) for name in backends}
    first = next(iter(encoders.values()))
    folder = first.spec.transformer_dir
    tokens = real_tokens(folder / "tokenizer.json", texts, first.max_length)
    flops = linear_flops_per_token(folder / "config.json")
    peak: list[float] = []
    rates: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(args.rounds):
        peak.append(max(product() for _ in range(3)))
        for name, encoder in encoders.items():
            start = time.perf_counter()
            encoder.encode(texts)
            rates[name].append(len(texts) / (time.perf_counter() - start))
    best = statistics.median(peak)
    print(f"{len(texts)} held-out STS sentences, {tokens / len(texts):.1f} tokens each; "
          f"{flops / 1e6:.1f} MFLOP per token in the linear layers; {args.rounds} rounds, median")  # fmt: skip
    spread = f"rounds {min(peak):.0f}-{max(peak):.0f}"
    unit, how = ("GOP/s", "OpenVINO int8, NNCF, all streams") if int8 else ("GFLOP/s", "torch, all cores")
    print(f"{args.precision} matmul peak ({size}^3, {how}): {best:.0f} {unit} ({spread})")
    for name, values in rates.items():
        rate = statistics.median(values)
        achieved = rate * tokens / len(texts) * flops / 1e9
        share = f"{achieved / best:.0%} of the peak"
        print(f"sentemb {name} {args.precision}: {rate:.0f} sentences/s = {achieved:.0f} {unit} = {share}")


if __name__ == "__main__":
    main()
