"""Sparse (SPLADE) encoders: texts in, a weight per vocabulary id out, as sentence-transformers'
``SparseEncoder.encode`` computes them.

The third model kind on the encoder's seam: its inputs are texts (tokenised, truncated and batched as
the encoder's), its head is the masked-language-model head with SPLADE's pooling inside the graph
(:class:`sentemb.heads.Splade`: only (B, vocab) leaves it), and its post-processing keeps each row's
non-zero weights (the top ``max_active_dims`` where set) as :class:`SparseEmbeddings`. The backends,
``backend='auto'``'s measurement and the export cache are the encoder's.

An inference-free model (a Router) encodes documents with SPLADE and queries with a weight per token
id (``SparseStaticEmbedding``): no forward pass at all for a query.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sentemb.backends import Backend, choose_backend
from sentemb.backends.choice import SAMPLE, Choice
from sentemb.batching import Inputs, run_batches, stream_pool
from sentemb.config import EncoderConfig, LoadOptions, LongText
from sentemb.encoder import load_config, progress_bar
from sentemb.errors import ConfigError, UnsupportedModelError
from sentemb.heads import Splade
from sentemb.machine import Machine
from sentemb.models import ModelSpec
from sentemb.models.resolve import Resolved, sha256_file
from sentemb.models.sparse import SUPPORTED_SPARSE, StaticWeights
from sentemb.plan import RuntimePlan, batch_size, explain, machine_line, open_model
from sentemb.prompts import DOCUMENT, QUERY, resolve_prompt, task_prompt_name
from sentemb.sparse_vectors import SparseEmbeddings, sparse_dot
from sentemb.tokenize import LoadedTokenizer, TextInfo, TokenizerSpec, as_texts, load_hf_tokenizer, tokenize

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from typing_extensions import Unpack

# Texts tokenised, run and turned into sparse rows together: (SLAB, vocab) float32 is the largest
# dense matrix an encode call holds (256 x 30522: 31 MB).
SLAB = 256
# Most MLM logits one forward batch makes (batch x tokens x vocab floats, 32 MB: 274 tokens of a BERT
# vocabulary): the graph holds a few buffers of that size per stream, so the token budget shrinks with
# the vocabulary. Measured on a MiniLM-L6-shaped SPLADE model, 1,000 STS texts in one call: peak RSS
# 1.28-1.34 GB (ONNX) and 1.20 GB (OpenVINO) at 2**25, 1.02-1.13 GB and 0.85 GB at 2**23, no slower.
LOGITS_BUDGET = 2**23
# torch allocates each batch's logits afresh (no arena keeps them), and its matmuls want larger batches:
# at 2**23 it ran at 0.7-0.9x of sentence-transformers, at 2**25 1.2-1.4x (busy 2-core machine).
TORCH_LOGITS_BUDGET = 2**25
# Options of an embedding model that a sparse encoder has no use for.
EMBEDDING_OPTIONS = ("pooling", "normalize", "truncate_dim")


@dataclass(frozen=True)
class SparseEncodeResult:
    """Sparse vectors plus, per text, its token count and whether it was cut at max_length."""

    embeddings: SparseEmbeddings
    info: list[TextInfo]


@dataclass(frozen=True, eq=False)
class StaticRoute:
    """A Router's inference-free route: each token id the text holds (no special tokens, cut at the
    tokenizer's own max length, as SparseStaticEmbedding tokenises) weighs its saved weight."""

    weights: StaticWeights
    tokenizer: LoadedTokenizer
    max_length: int | None

    @classmethod
    def load(cls, weights: StaticWeights, trust_remote_code: bool) -> StaticRoute:
        path = weights.folder / "tokenizer_config.json"
        limit = json.loads(path.read_text(encoding="utf-8")).get("model_max_length") if path.is_file() else None
        kept = int(limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else None
        return cls(weights, load_hf_tokenizer(str(weights.folder), trust_remote_code), kept)

    def encode(self, texts: list[str], dim: int) -> tuple[np.ndarray, list[TextInfo]]:
        encodings = self.tokenizer.tokenizer.encode_batch(texts, add_special_tokens=False)
        out = np.zeros((len(texts), dim), dtype=np.float32)
        info = []
        for row, enc in enumerate(encodings):
            ids = np.asarray(enc.ids[: self.max_length], dtype=np.int64)
            out[row, ids] = self.weights.weight[ids]
            info.append(TextInfo(len(enc.ids), self.max_length is not None and len(enc.ids) > self.max_length))
        return out, info


class SparseEncoder:
    """Turns texts into sparse vectors over the model's vocabulary. Build it with :func:`sentemb.load_sparse`.

    Thread-safe: one sparse encoder may serve many threads at once.
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
        max_active_dims: int | None = None,
        query_route: StaticRoute | None = None,
        choice: Choice | None = None,
    ) -> None:
        self.config = config
        self.plan = plan
        self.resolved = resolved
        self.spec = spec
        self.max_active_dims = max_active_dims
        self.choice = choice
        self._query_route = query_route
        self._tokenizer = tokenizer
        self._backend = backend
        self._token_spec = TokenizerSpec(tokenizer.tokenizer, self.max_length, spec.lowercase, config.max_chars)
        self._forward_pool = stream_pool(plan.streams)
        vocab = tokenizer.tokenizer.get_vocab(with_added_tokens=True)
        names = [f"[{i}]" for i in range(self.dim)]
        for token, i in vocab.items():
            if i < self.dim:
                names[i] = token
        self.vocabulary = tuple(names)

    @property
    def max_length(self) -> int:
        """Tokens per text, special tokens included: the config's, else the model's."""
        return self.config.max_length or self.spec.max_length

    @property
    def dim(self) -> int:
        """The vocabulary size: how many ids a sparse vector ranges over."""
        return self.plan.width

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer (``tokenizers.Tokenizer``, truncation and padding off; read-only use)."""
        return self._tokenizer.tokenizer

    @property
    def prompts(self) -> dict[str, str]:
        return self.spec.st.prompt_dict

    @property
    def default_prompt_name(self) -> str | None:
        name = self.config.default_prompt_name
        return self.spec.st.default_prompt_name if name is None else name

    @property
    def backend(self) -> str:
        return self.plan.backend

    @property
    def device(self) -> str:
        return self.plan.device

    def with_max_chars(self, max_chars: int | None) -> SparseEncoder:
        """The same model (backend and tokenizer shared, nothing loaded again) with another character cap."""
        return SparseEncoder(self.config.replace(max_chars=max_chars), self.resolved, self.spec, self._tokenizer,
                             self._backend, plan=self.plan, max_active_dims=self.max_active_dims,
                             query_route=self._query_route, choice=self.choice)  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"SparseEncoder(model={self.config.model!r}, dim={self.dim}, max_length={self.max_length}, "
            f"backend={self.backend!r}, device={self.device!r})"
        )

    def describe(self) -> dict[str, Any]:
        """Facts about this sparse encoder for humans and logs: model, files' sha256, pooling, and its plan."""
        splade = self.spec.sparse.splade if self.spec.sparse is not None else None
        return {
            "model": self.config.model,
            "kind": "sparse",
            "source": self.resolved.source,
            "path": str(self.resolved.path),
            "revision": self.resolved.revision,
            "model_type": self.spec.model_type,
            "dim": self.dim,
            "pooling": splade.pooling if splade else None,
            "activation": splade.activation if splade else None,
            "inference_free_queries": self._query_route is not None,
            "max_active_dims": self.max_active_dims,
            "max_length": self.max_length,
            "prompts": self.prompts,
            "sha256": {p.name: sha256_file(p) for p in self.spec.weights},
            "plan": self.plan.to_dict(),
            "auto_choice": self.choice.describe() if self.choice is not None else None,
        }

    def encode(
        self,
        texts: str | Iterable[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int | None = None,
        max_active_dims: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> SparseEmbeddings:
        """Sparse vectors of ``texts`` (a str is one text), each id's weight, ids ascending.

        ``prompt`` or ``prompt_name`` goes before each text (with neither, the default prompt);
        ``max_active_dims`` keeps each vector's largest that many weights (default: the model's)."""
        result = self.encode_with_info(texts, prompt_name=prompt_name, prompt=prompt, batch_size=batch_size,
                                       max_active_dims=max_active_dims,
                                       show_progress_bar=show_progress_bar)  # fmt: skip
        return result.embeddings

    def encode_query(self, texts: str | Iterable[str], **kw: Any) -> SparseEmbeddings:
        """:meth:`encode` with the "query" prompt (unless one is given) and, for an inference-free model,
        its query route (a weight per token: no forward pass)."""
        return self.encode_with_info(texts, route="query", **self._task_prompt(QUERY, kw)).embeddings

    def encode_document(self, texts: str | Iterable[str], **kw: Any) -> SparseEmbeddings:
        """:meth:`encode` with the "document" (else "passage", else "corpus") prompt unless one is given,
        and the document route."""
        return self.encode_with_info(texts, route="document", **self._task_prompt(DOCUMENT, kw)).embeddings

    def _task_prompt(self, candidates: tuple[str, ...], kw: dict[str, Any]) -> dict[str, Any]:
        if kw.get("prompt_name") is None and kw.get("prompt") is None:
            kw = {**kw, "prompt_name": task_prompt_name(self.prompts, candidates)}
        return kw

    def resolve_prompt(self, *, prompt_name: str | None = None, prompt: str | None = None) -> str:
        """The prompt text a call with these arguments uses ("" for none); ConfigError for an unknown name."""
        return resolve_prompt(self.prompts, self.default_prompt_name, prompt=prompt, prompt_name=prompt_name)

    def similarity(self, a: SparseEmbeddings, b: SparseEmbeddings) -> np.ndarray:
        """Dot product of every vector of ``a`` with every vector of ``b`` (float32, (len(a), len(b)))."""
        return sparse_dot(a, b)

    def encode_with_info(
        self,
        texts: str | Iterable[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int | None = None,
        max_active_dims: int | None = None,
        show_progress_bar: bool | None = None,
        route: str | None = None,
    ) -> SparseEncodeResult:
        """Like :meth:`encode`, plus per text its token count and whether it was cut at ``max_length``.
        ``route`` ("query" or "document") picks an inference-free model's route (default: its default)."""
        items = as_texts(texts)
        text = self.resolve_prompt(prompt_name=prompt_name, prompt=prompt)
        keep = max_active_dims if max_active_dims is not None else self.max_active_dims
        if keep is not None and keep < 1:
            raise ConfigError(f"max_active_dims must be at least 1, got {keep}")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        default = self.spec.sparse.default_route if self.spec.sparse is not None else "document"
        static = self._query_route is not None and (route or default) == "query"
        show = self.config.show_progress if show_progress_bar is None else show_progress_bar
        progress = progress_bar(len(items), show, 4 * self.plan.batch_size, "text", "encoding")
        parts: list[SparseEmbeddings] = []
        info: list[TextInfo] = []
        for start in range(0, len(items), SLAB):
            slab = [text + t for t in items[start : start + SLAB]] if static else items[start : start + SLAB]
            if static:
                dense, slab_info = self._query_route.encode(slab, self.dim)  # type: ignore[union-attr]
            else:
                dense, slab_info = self._forward(slab, start, text, batch_size or self.plan.batch_size, progress)
            parts.append(SparseEmbeddings.from_dense(dense, max_active_dims=keep, vocabulary=self.vocabulary))
            info.extend(slab_info)
        if progress is not None:
            progress.close()
        if not parts:
            return SparseEncodeResult(SparseEmbeddings(np.zeros(1), np.zeros(0), np.zeros(0), self.dim,
                                                       self.vocabulary), [])  # fmt: skip
        return SparseEncodeResult(SparseEmbeddings.concat(parts), info)

    def _forward(
        self, texts: list[str], start: int, prompt: str, rows: int, progress: Any
    ) -> tuple[np.ndarray, list[TextInfo]]:
        """The SPLADE weights (len(texts), vocab) of one slab: tokenise, batch, run the graph."""
        sequences, info = tokenize(self._token_spec, texts, self.config.long_text, 0, start, prompt=prompt)
        inputs = Inputs([s.ids for s in sequences], [s.type_ids for s in sequences], self._tokenizer.pad_id,
                        self._tokenizer.uses_type_ids)  # fmt: skip
        logits = TORCH_LOGITS_BUDGET if self.plan.backend == "torch" else LOGITS_BUDGET
        budget = min(self.config.forward_tokens, max(self.max_length, logits // self.dim))
        weights = run_batches(inputs, self._backend.run, self._backend.dim, batch_size=rows, max_tokens=budget,
                              pool=self._forward_pool, max_padding=self._backend.max_padding,
                              progress=progress.update if progress is not None else None)  # fmt: skip
        return weights, info


def load_sparse(
    model: str,
    *,
    max_active_dims: int | None = None,
    config: EncoderConfig | None = None,
    **options: Unpack[LoadOptions],
) -> SparseEncoder:
    """Load a sparse (SPLADE) encoder by local path or hub id and return its :class:`SparseEncoder`.

    It loads what sentence-transformers saves for a ``SparseEncoder`` (a fill-mask transformer and
    SpladePooling, or a Router with an inference-free query side), by the rules of :func:`sentemb.load`
    (local folder, hub cache, ``revision=``, safetensors only, no remote code, offline by default).
    ``options`` are the runtime fields of :class:`EncoderConfig`; ``max_active_dims`` keeps each vector's
    largest that many weights (default: the model's own setting, else all).
    """
    config = load_config(model, config, dict(options))
    defaults = EncoderConfig()
    for name in EMBEDDING_OPTIONS:
        if getattr(config, name) != getattr(defaults, name):
            raise ConfigError(f"{name}= is an embedding model's option; a sparse encoder's vectors are SPLADE "
                              "weights over the vocabulary and have none")  # fmt: skip
    if config.long_text is LongText.CHUNK:
        raise ConfigError("long_text='chunk' is for embedding models; a sparse encoder truncates (or, with "
                          "long_text='error', refuses) texts over max_length, as sentence-transformers "
                          "does")  # fmt: skip
    if max_active_dims is not None and max_active_dims < 1:
        raise ConfigError(f"max_active_dims must be at least 1, got {max_active_dims}")
    return _build(config, max_active_dims)


def _build(config: EncoderConfig, max_active_dims: int | None) -> SparseEncoder:
    machine = Machine.here()
    resolved, spec = open_model(config, machine, task="sparse")
    if spec.sparse is None:
        raise UnsupportedModelError(f"{spec.root} has a fill-mask transformer and no SpladePooling module after "
                                    f"it; sentemb runs {SUPPORTED_SPARSE}")  # fmt: skip
    head = Splade(spec.sparse.splade.pooling, spec.sparse.splade.activation)
    query = spec.sparse.query
    route = StaticRoute.load(query, config.trust_remote_code) if query is not None else None
    keep = max_active_dims or spec.max_active_dims

    def encoder(conf: EncoderConfig, backend: Backend, why: tuple[str, ...], choice: Choice | None) -> SparseEncoder:
        tokenizer = backend.tokenizer or load_hf_tokenizer(str(spec.transformer_dir), conf.trust_remote_code)
        plan = RuntimePlan(
            kind="sparse", backend=backend.name, precision=conf.precision.value, device=backend.device,
            batch_size=batch_size(conf, backend.device), streams=backend.streams, threads=backend.threads,
            width=backend.dim, graph=backend.graph, why=why, machine=machine_line(machine),
        )  # fmt: skip
        return SparseEncoder(conf, resolved, spec, tokenizer, backend, plan=plan, max_active_dims=keep,
                             query_route=route, choice=choice)  # fmt: skip

    def sample_pass(conf: EncoderConfig, candidate: Backend) -> None:  # one timed pass of auto's measurement
        encoder(conf.replace(show_progress=False), candidate, (), None).encode_document(list(SAMPLE))

    asked = config
    config, backend, choice = choose_backend(spec, config, sample_pass, machine=machine, head=head)
    if query is not None and len(query.weight) != backend.dim:
        raise UnsupportedModelError(f"{spec.root}: the query route weighs {len(query.weight)} ids but the "
                                    f"document route's vocabulary has {backend.dim}; the Router's two sides "
                                    "do not fit")  # fmt: skip
    why = explain(asked, config, choice.describe() if choice is not None else None, machine, spec)
    built = encoder(config, backend, why, choice)
    built.resolve_prompt()  # an unknown default_prompt_name fails at load, naming the model's prompts
    return built
