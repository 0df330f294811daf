"""Cross-encoders (rerankers): text pairs in, a relevance score per pair out, as sentence-transformers'
``CrossEncoder.predict`` and ``rank`` compute them.

The second model kind on the same seam as the encoder: its inputs are pairs (tokenised together,
cut ``longest_first`` at the model's max length), its head is the classifier inside the graph
(:class:`sentemb.heads.Logits`), and its post-processing is the activation sentence-transformers
applies. Tokenising, batching, the backends, ``backend='auto'``'s measurement and the export cache are
the encoder's.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sentemb.backends import Backend, choose_backend
from sentemb.backends.choice import SAMPLE, Choice
from sentemb.batching import Inputs, run_batches, stream_pool
from sentemb.config import EncoderConfig, LoadOptions, Precision
from sentemb.encoder import load_config, progress_bar
from sentemb.errors import ConfigError, UnsupportedModelError
from sentemb.export.recipe import CALIBRATION_FILE
from sentemb.heads import Logits
from sentemb.machine import Machine
from sentemb.models import ModelSpec
from sentemb.models.resolve import Resolved, sha256_file
from sentemb.plan import RuntimePlan, batch_size, explain, machine_line, open_model
from sentemb.tokenize import (
    LoadedTokenizer,
    TextInfo,
    TokenizerSpec,
    as_pairs,
    load_hf_tokenizer,
    pair_tokenizer,
    tokenize_pairs,
)

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from typing_extensions import Unpack

log = logging.getLogger("sentemb")

# The activations sentence-transformers saves for cross-encoders, by the torch class it names.
ACTIVATIONS = ("sigmoid", "identity", "tanh")
_TORCH_ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
}
# What int8 does to a cross-encoder's scores (benchmarks/rerank_int8.py): said in the plan and logged at load.
INT8_CAVEAT = (
    "int8 reranking keeps the feed-forward MatMuls fp32 and moves a score by ~0.001 (Spearman to fp32 0.998 on "
    "a fine-tuned STS cross-encoder, the same best passage for 92-98% of queries): passages closer than that "
    "can swap, so the top 10 came in fp32's exact order for only 5-14% of queries; rescore=True re-scores "
    "rank()'s top candidates in fp32"
)
# Options that decide how texts become vectors: an embedding model's, not a cross-encoder's.
EMBEDDING_OPTIONS = ("pooling", "normalize", "default_prompt_name", "truncate_dim", "long_text", "chunk_overlap")


@dataclass(frozen=True)
class RankHit:
    """One document of :meth:`Reranker.rank`: its index in the documents given, its score, its text if asked."""

    corpus_id: int
    score: float
    text: str | None = None


@dataclass(frozen=True)
class PredictResult:
    """Scores plus, per pair, its token count (both texts, without special tokens) and whether it was cut."""

    scores: np.ndarray
    info: list[TextInfo]


def activation_of(spec: ModelSpec, trust_remote_code: bool) -> str:
    """The activation sentence-transformers applies to this model's logits: the one it saved (a torch
    class), else Sigmoid for one label and none (identity) for several.

    A saved activation outside torch is ignored with a warning unless remote code is trusted, as
    sentence-transformers does; trusted, it is code sentemb cannot run, so the model is refused."""
    default = "sigmoid" if spec.labels == 1 else "identity"
    saved = spec.activation
    if saved is None:
        return default
    if saved in _TORCH_ACTIVATIONS:
        return _TORCH_ACTIVATIONS[saved]
    if saved.startswith("torch.") or trust_remote_code:
        raise UnsupportedModelError(
            f"{spec.root}: the cross-encoder's activation is {saved!r}, which sentemb does not run; it runs "
            f"{', '.join(_TORCH_ACTIVATIONS)}. Pass activation= to choose one, or use sentence-transformers"
        )
    log.warning("sentemb: %s names the activation %r, which is not trusted; using %s, as sentence-transformers "
                "does without trust_remote_code", spec.root, saved, default)  # fmt: skip
    return default


def activate(logits: np.ndarray, activation: str, apply_softmax: bool) -> np.ndarray:
    """``activation`` on every logit, then softmax over the labels where asked (several labels only)."""
    if activation == "sigmoid":
        scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    elif activation == "tanh":
        scores = np.tanh(logits.astype(np.float64))
    else:
        scores = logits.astype(np.float64)
    if apply_softmax and scores.shape[1] > 1:
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    out = scores.astype(np.float32)
    return out[:, 0] if out.shape[1] == 1 else out


class Reranker:
    """Scores (query, document) pairs with a cross-encoder. Build it with :func:`sentemb.load_reranker`.

    Thread-safe: one reranker may serve many threads at once.
    """

    def __init__(
        self,
        config: EncoderConfig,
        resolved: Resolved,
        spec: ModelSpec,
        tokenizer: LoadedTokenizer,
        backend: Backend,
        *,
        plan: RuntimePlan,
        activation: str,
        choice: Choice | None = None,
        rescorer: Rescorer | None = None,
    ) -> None:
        self.config = config
        self.plan = plan
        self.resolved = resolved
        self.spec = spec
        self.activation = activation
        self.choice = choice
        self.rescorer = rescorer
        self._tokenizer = tokenizer
        self._backend = backend
        self._token_spec = TokenizerSpec(tokenizer.tokenizer, self.max_length, spec.lowercase, config.max_chars)
        self._truncating = pair_tokenizer(tokenizer.tokenizer, self.max_length)
        self._forward_pool = stream_pool(plan.streams)

    @property
    def max_length(self) -> int:
        """Tokens per pair, special tokens included: the config's, else the model's."""
        return self.config.max_length or self.spec.max_length

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer (``tokenizers.Tokenizer``, truncation and padding off; read-only use)."""
        return self._tokenizer.tokenizer

    def with_max_chars(self, max_chars: int | None) -> Reranker:
        """The same model (backend and tokenizer shared, nothing loaded again) with another character cap."""
        rescorer = self.rescorer and dataclasses.replace(self.rescorer,
                                                         exact=self.rescorer.exact.with_max_chars(max_chars))
        return self._with(self.config.replace(max_chars=max_chars), self.plan, rescorer)

    def _with(self, config: EncoderConfig, plan: RuntimePlan, rescorer: Rescorer | None) -> Reranker:
        """The same model (backend and tokenizer shared) under another config, plan or rescorer."""
        return Reranker(config, self.resolved, self.spec, self._tokenizer, self._backend, plan=plan,
                        activation=self.activation, choice=self.choice, rescorer=rescorer)  # fmt: skip

    @property
    def labels(self) -> int:
        """Scores per pair: 1 for a relevance model, more for a classifier (NLI: 3)."""
        return self.plan.width

    @property
    def backend(self) -> str:
        return self.plan.backend

    @property
    def device(self) -> str:
        return self.plan.device

    def __repr__(self) -> str:
        return (
            f"Reranker(model={self.config.model!r}, labels={self.labels}, activation={self.activation!r}, "
            f"max_length={self.max_length}, backend={self.backend!r}, device={self.device!r})"
        )

    def describe(self) -> dict[str, Any]:
        """Facts about this reranker for humans and logs: model, files' sha256, activation, and its plan."""
        return {
            "model": self.config.model,
            "kind": "rerank",
            "source": self.resolved.source,
            "path": str(self.resolved.path),
            "revision": self.resolved.revision,
            "model_type": self.spec.model_type,
            "labels": self.labels,
            "activation": self.activation,
            "max_length": self.max_length,
            "sha256": {p.name: sha256_file(p) for p in self.spec.weights},
            "plan": self.plan.to_dict(),
            "auto_choice": self.choice.describe() if self.choice is not None else None,
            "rescore": self.rescorer.describe() if self.rescorer is not None else None,
        }

    def predict(
        self,
        pairs: Iterable[Sequence[str]],
        *,
        activation: str | None = None,
        apply_softmax: bool = False,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Scores of ``pairs`` as float32: shape (N,) for a one-label model, (N, labels) otherwise.

        ``activation`` ("sigmoid", "identity", "tanh") replaces the model's for this call;
        ``apply_softmax`` turns several labels' scores into probabilities, as sentence-transformers."""
        return self.predict_with_info(
            pairs, activation=activation, apply_softmax=apply_softmax, show_progress=show_progress
        ).scores

    def predict_with_info(
        self,
        pairs: Iterable[Sequence[str]],
        *,
        activation: str | None = None,
        apply_softmax: bool = False,
        show_progress: bool | None = None,
    ) -> PredictResult:
        """Like :meth:`predict`, plus per pair its token count and whether it was cut at ``max_length``."""
        chosen = self.activation if activation is None else _checked_activation(activation)
        items = as_pairs(pairs)
        if not items:
            shape = (0,) if self.labels == 1 else (0, self.labels)
            return PredictResult(np.zeros(shape, dtype=np.float32), [])
        sequences, info = tokenize_pairs(self._token_spec, self._truncating, items)
        inputs = Inputs([s.ids for s in sequences], [s.type_ids for s in sequences], self._tokenizer.pad_id,
                        self._tokenizer.uses_type_ids)  # fmt: skip
        show = self.config.show_progress if show_progress is None else show_progress
        progress = progress_bar(len(items), show, 4 * self.plan.batch_size, "pair", "reranking")
        logits = run_batches(inputs, self._backend.run, self.labels, batch_size=self.plan.batch_size,
                             max_tokens=self.config.forward_tokens, pool=self._forward_pool,
                             progress=progress.update if progress is not None else None,
                             max_padding=self._backend.max_padding)  # fmt: skip
        if progress is not None:
            progress.close()
        return PredictResult(activate(logits, chosen, apply_softmax), info)

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        return_documents: bool = False,
        activation: str | None = None,
        show_progress: bool | None = None,
    ) -> list[RankHit]:
        """The documents scored against ``query``, best first (ties keep the documents' order), at most
        ``top_k``; each hit names the document's index, its score and, with ``return_documents``, its text.

        An int8 reranker with a :class:`Rescorer` re-scores in fp32 every document that could belong in the
        top ``top_k`` (all of them without ``top_k``): the hits come in fp32's order with fp32's scores."""
        if self.labels != 1:
            raise ConfigError(f"rank() needs a one-label model; this one gives {self.labels} scores per pair: "
                              "use predict() and choose a label")  # fmt: skip
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        if isinstance(documents, str):
            raise ConfigError("documents must be a list of texts, not one str")
        chosen = self.activation if activation is None else _checked_activation(activation)
        docs = list(documents)
        pairs = [(query, d) for d in docs]
        logits = self.predict(pairs, activation="identity", show_progress=show_progress)
        if self.rescorer is not None:
            logits = self.rescorer.rescore(pairs, logits, top_k)
        scores = activate(logits.reshape(-1, 1), chosen, False)
        order = np.argsort(-scores, kind="stable")[: top_k or len(docs)]
        return [RankHit(int(i), float(scores[i]), docs[i] if return_documents else None) for i in order]


@dataclass(frozen=True)
class Rescorer:
    """The same cross-encoder at fp32 beside an int8 one: :meth:`Reranker.rank` scores every document in int8,
    then re-scores in fp32 those whose int8 logit lies within ``margin`` of the k-th best, so that the top k
    come in fp32's order with fp32's scores. ``margin`` is twice the largest int8 error measured at load on
    ``calibration_pairs`` pairs (sentemb's calibration sentences, each followed by the next four)."""

    exact: Reranker
    margin: float
    calibration_pairs: int

    def band(self, logits: np.ndarray, top_k: int | None) -> np.ndarray:
        """Indices of the documents whose fp32 score could place them in the top ``top_k`` (all without one)."""
        if top_k is None or top_k >= len(logits):
            return np.arange(len(logits))
        kth = np.partition(logits, len(logits) - top_k)[len(logits) - top_k]
        return np.flatnonzero(logits >= kth - self.margin)

    def rescore(self, pairs: Sequence[tuple[str, str]], logits: np.ndarray, top_k: int | None) -> np.ndarray:
        """``logits`` (int8's, one per pair) with those of :meth:`band` replaced by fp32's."""
        band = self.band(logits, top_k)
        exact = logits.copy()
        exact[band] = self.exact.predict([pairs[i] for i in band], activation="identity", show_progress=False)
        return exact

    def describe(self) -> dict[str, Any]:
        return {"backend": self.exact.backend, "precision": self.exact.config.precision.value,
                "margin": round(self.margin, 6), "calibration_pairs": self.calibration_pairs}  # fmt: skip


def calibrated_rescorer(fast: Reranker, exact: Reranker) -> Rescorer:
    """A :class:`Rescorer` whose margin is twice the largest |int8 - fp32| logit on the calibration pairs."""
    texts = [line for line in CALIBRATION_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    pairs = [(texts[i], " ".join(texts[i + 1 : i + 5])) for i in range(0, len(texts) - 4, 2)]
    fast_logits = fast.predict(pairs, activation="identity", show_progress=False)
    error = np.abs(fast_logits - exact.predict(pairs, activation="identity", show_progress=False))
    return Rescorer(exact, 2 * float(error.max()), len(pairs))


def _checked_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ConfigError(f"activation={name!r} is not valid; choose one of {', '.join(map(repr, ACTIVATIONS))}")
    return name


def load_reranker(
    model: str,
    *,
    activation: str | None = None,
    rescore: bool = False,
    config: EncoderConfig | None = None,
    **options: Unpack[LoadOptions],
) -> Reranker:
    """Load a cross-encoder by local path or hub id and return its :class:`Reranker`.

    It loads what sentence-transformers saves for a ``CrossEncoder`` and plain transformers
    ``*ForSequenceClassification`` folders, by the rules of :func:`sentemb.load` (local folder, hub cache,
    ``revision=``, safetensors only, no remote code, offline by default). ``options`` are the runtime
    fields of :class:`EncoderConfig` (device, backend, precision, max_length, batch_size, ...);
    ``activation`` ("sigmoid", "identity", "tanh") replaces the model's own. ``rescore=True`` (int8, one
    label) loads the model at fp32 beside it so that :meth:`Reranker.rank` re-scores its top candidates
    exactly (see :class:`Rescorer`): fp32's top-k order at int8's speed for the rest.
    """
    config = load_config(model, config, dict(options))
    defaults = EncoderConfig()
    for name in EMBEDDING_OPTIONS:
        if getattr(config, name) != getattr(defaults, name):
            raise ConfigError(f"{name}= is an embedding model's option; a cross-encoder scores pairs (cut at "
                              "max_length, longest_first, as sentence-transformers) and has none")  # fmt: skip
    if activation is not None:
        _checked_activation(activation)
    if rescore and config.precision is not Precision.INT8:
        raise ConfigError(f"rescore=True re-scores int8's top candidates in fp32; this reranker runs "
                          f"{config.precision.value}, whose scores need no rescoring")  # fmt: skip
    fast = _build(config, activation, warn=not rescore)
    if not rescore:
        return fast
    if fast.labels != 1:
        raise ConfigError(f"rescore=True serves rank(), which needs a one-label model; this one gives {fast.labels}")
    exact = _build(fast.config.replace(precision=Precision.FP32), fast.activation, warn=False)
    rescorer = calibrated_rescorer(fast, exact)
    plan = dataclasses.replace(fast.plan, why=(*fast.plan.why, f"rank() re-scores in fp32 ({exact.backend}) the "
                               f"candidates within {rescorer.margin:.4g} logits of the k-th best int8 score"))
    return fast._with(fast.config, plan, rescorer)


def _build(config: EncoderConfig, activation: str | None, *, warn: bool) -> Reranker:
    machine = Machine.here()
    resolved, spec = open_model(config, machine, task="rerank")
    chosen = activation or activation_of(spec, config.trust_remote_code)
    head = Logits(spec.labels)

    def reranker(conf: EncoderConfig, backend: Backend, why: tuple[str, ...], choice: Choice | None) -> Reranker:
        tokenizer = backend.tokenizer or load_hf_tokenizer(str(spec.transformer_dir), conf.trust_remote_code)
        plan = RuntimePlan(
            kind="rerank", backend=backend.name, precision=conf.precision.value, device=backend.device,
            batch_size=batch_size(conf, backend.device), streams=backend.streams, threads=backend.threads,
            width=backend.dim, graph=backend.graph, why=why, machine=machine_line(machine),
        )  # fmt: skip
        return Reranker(conf, resolved, spec, tokenizer, backend, plan=plan, activation=chosen, choice=choice)

    def sample_pass(conf: EncoderConfig, candidate: Backend) -> None:  # one timed pass of auto's measurement
        pairs = list(itertools.pairwise(SAMPLE))
        reranker(conf.replace(show_progress=False), candidate, (), None).predict(pairs)

    asked = config
    config, backend, choice = choose_backend(spec, config, sample_pass, machine=machine, head=head)
    why = explain(asked, config, choice.describe() if choice is not None else None, machine, spec)
    if config.precision is Precision.INT8 and warn:
        why = (*why, INT8_CAVEAT)
        log.warning("sentemb: %s", INT8_CAVEAT)
    return reranker(config, backend, why, choice)
