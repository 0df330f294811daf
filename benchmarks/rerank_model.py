"""The cross-encoder the rerank benchmarks measure: all-MiniLM-L6-v2's weights fine-tuned on STS train
with sentence-transformers' own CrossEncoder loop (never committed; cached by rerank_bench.py)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the block, then restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(model_dir: Path, data: Path) -> None:
    """Fine-tune all-MiniLM-L6-v2 as a one-label cross-encoder on STS train and save it to ``model_dir``.

    ``old_fit`` is sentence-transformers' own CrossEncoder loop (BCE-with-logits on score/5, AdamW at
    2e-5, linear warm-up over 10% of the steps): the STS-B example's recipe, and it needs neither
    ``datasets`` nor ``accelerate``, which these venvs lack. One torch thread: on this shared 2-core
    machine a step took 0.7 s with one and 5 s with two (the second spun against other processes)."""
    import torch
    from sentence_transformers import CrossEncoder, InputExample
    from torch.utils.data import DataLoader

    import sentemb
    from sentemb.models.resolve import bundled_default

    sts = sentemb.read_sts(data / "sts-train.csv")
    examples = [InputExample(texts=[a, b], label=score / 5.0)
                for a, b, score in zip(sts.sentences1, sts.sentences2, sts.scores, strict=True)]  # fmt: skip
    torch.manual_seed(0)
    model = CrossEncoder(str(bundled_default()), num_labels=1, device="cpu")
    loader = DataLoader(examples, shuffle=True, batch_size=16)
    started = time.perf_counter()
    with torch_threads(1):
        model.old_fit(train_dataloader=loader, epochs=1, warmup_steps=len(loader) // 10, show_progress_bar=False)
    model.save_pretrained(str(model_dir))
    print(f"trained on {len(examples)} STS train pairs in {time.perf_counter() - started:.0f} s -> {model_dir}")


def dev_spearman(model_dir: Path, data: Path) -> float:
    """Spearman (x100) of sentence-transformers' scores of the STS dev pairs against the gold scores."""
    from sentence_transformers import CrossEncoder

    import sentemb
    from sentemb.evaluation import correlations

    dev = sentemb.read_sts(data / "sts-dev.csv")
    model = CrossEncoder(str(model_dir), device="cpu")
    scores = model.predict(list(zip(dev.sentences1, dev.sentences2, strict=True)), show_progress_bar=False)
    return correlations(np.asarray(scores), np.asarray(dev.scores))[0]
