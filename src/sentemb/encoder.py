"""The encoder: the one place that joins tokenise -> plan batches -> embed (forward + pool) -> normalise."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sentemb.backends import Backend, choose_backend
from sentemb.backends.choice import SAMPLE, Choice
from sentemb.batching import Inputs, run_batches, stream_pool
from sentemb.config import EncoderConfig, LoadOptions, LongText, Pooling
from sentemb.errors import ConfigError
from sentemb.facts import EncoderFacts
from sentemb.heads import Pooled
from sentemb.machine import Machine
from sentemb.models import ModelSpec, SavePlan, write_st_folder, write_static_model
from sentemb.models.resolve import Resolved
from sentemb.models.static import char_cap
from sentemb.plan import RuntimePlan, batch_size, describe_model, explain, machine_line, open_model
from sentemb.pooling import normalize, truncate_dim
from sentemb.prompts import DOCUMENT, QUERY, resolve_prompt, task_prompt_name
from sentemb.similarity import similarity_matrix, similarity_pairwise
from sentemb.tokenize import (
    LoadedTokenizer,
    TextInfo,
    TokenizerSpec,
    as_texts,
    load_hf_tokenizer,
    prompt_length,
    tokenize,
)

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from typing_extensions import Unpack

# Texts tokenised and planned together: bounds memory while keeping length sorting effective.
SLAB = 8192


@dataclass(frozen=True)
class EncodeResult:
    """Vectors plus what happened to each text (token count, truncation, chunks)."""

    embeddings: np.ndarray
    info: list[TextInfo]

    @property
    def truncated_indices(self) -> list[int]:
        """Indices of the texts that were cut at max_length (each text's own ``info[i].truncated`` says it too)."""
        return [i for i, item in enumerate(self.info) if item.truncated]


class Encoder:
    """Turns texts into float32 vectors of ``dim`` numbers. Build it with :func:`sentemb.load`.

    Thread-safe: one encoder may serve many threads at once.
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
        machine: Machine,
        choice: Choice | None = None,
    ) -> None:
        self.config = config
        self.plan = plan
        self.machine = machine
        self.choice = choice  # what backend='auto' measured on the CPU (None when not measured)
        self.resolved = resolved
        self.spec = spec
        self._tokenizer = tokenizer
        self._backend = backend
        self._forward_pool = stream_pool(plan.streams)
        chars = char_cap(spec.static, self.max_length, config.max_chars, config.long_text is LongText.TRUNCATE)
        self._token_spec = TokenizerSpec(tokenizer.tokenizer, self.max_length, spec.lowercase, chars)

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer (``tokenizers.Tokenizer``, truncation and padding off; read-only use)."""
        return self._tokenizer.tokenizer

    @property
    def dim(self) -> int:
        """The width of the vectors: after the model's Dense layers and ``truncate_dim``."""
        return self.plan.width

    @property
    def truncate_dim(self) -> int | None:
        """Matryoshka width: the config's, else the folder's (``truncate_dim`` in its config), else None."""
        return self.config.truncate_dim or self.spec.st.truncate_dim

    @property
    def prompts(self) -> dict[str, str]:
        """The model's prompts by name ("query" and "document" are always there, "" unless set)."""
        return self.spec.st.prompt_dict

    @property
    def default_prompt_name(self) -> str | None:
        """The prompt used when a call names none: the config's, else the folder's ("" or None: none)."""
        name = self.config.default_prompt_name
        return self.spec.st.default_prompt_name if name is None else name

    @property
    def similarity_fn_name(self) -> str:
        """How :meth:`similarity` scores: "cosine", "dot", "euclidean" or "manhattan" (the folder's)."""
        return self.spec.st.similarity_fn_name

    @property
    def max_length(self) -> int:
        return self.config.max_length or self.spec.max_length

    @property
    def batch_size(self) -> int:
        """Most texts per batch: the config's, else the default for the device."""
        return self.plan.batch_size

    @property
    def pooling(self) -> Pooling:
        return self.config.pooling or self.spec.pooling

    @property
    def normalizes(self) -> bool:
        """Whether vectors come out unit-length (the config's, else the folder's)."""
        return self.spec.normalize if self.config.normalize is None else self.config.normalize

    @property
    def device(self) -> str:
        return self._backend.device

    @property
    def backend(self) -> str:
        """The name of the backend that runs: a :class:`BackendName` value (never "auto"), or a test fake's."""
        return self._backend.name

    def describe(self) -> EncoderFacts:
        """Facts about this encoder for humans and manifests: the model's (:func:`sentemb.plan.describe_model`)
        with what its plan runs: backend, precision, device, batch size, width and ``auto``'s measurement."""
        facts = describe_model(self.config, self.resolved, self.spec, self.machine)
        return replace(
            facts, dim=self.dim, batch_size=self.batch_size, backend=self.backend, device=self.device,
            precision=self.plan.precision, auto_choice=self.choice.describe() if self.choice is not None else None,
        )  # fmt: skip

    def with_max_chars(self, max_chars: int | None) -> Encoder:
        """The same model (backend and tokenizer shared, nothing loaded again) with another character cap."""
        config = self.config.replace(max_chars=max_chars)
        return Encoder(config, self.resolved, self.spec, self._tokenizer, self._backend, plan=self.plan,
                       machine=self.machine, choice=self.choice)  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"Encoder(model={self.config.model!r}, dim={self.dim}, pooling={self.pooling.value!r}, "
            f"normalize={self.normalizes}, max_length={self.max_length}, backend={self.backend!r}, "
            f"device={self.device!r})"
        )

    def encode(
        self,
        texts: str | Iterable[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Vectors for ``texts`` as a float32 array of shape (len(texts), dim); a str is one text.

        ``prompt`` (a text) or ``prompt_name`` (one of :attr:`prompts`) goes before each text; with
        neither, the default prompt (:attr:`default_prompt_name`) does, as in sentence-transformers.
        """
        result = self.encode_with_info(texts, prompt_name=prompt_name, prompt=prompt, show_progress=show_progress)
        return result.embeddings

    def encode_query(
        self,
        texts: str | Iterable[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """:meth:`encode` with the model's "query" prompt unless a prompt is given (sentence-transformers 5)."""
        if prompt_name is None and prompt is None:
            prompt_name = task_prompt_name(self.prompts, QUERY)
        return self.encode(texts, prompt_name=prompt_name, prompt=prompt, show_progress=show_progress)

    def encode_document(
        self,
        texts: str | Iterable[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """:meth:`encode` with the model's "document" (else "passage", else "corpus") prompt unless one is given."""
        if prompt_name is None and prompt is None:
            prompt_name = task_prompt_name(self.prompts, DOCUMENT)
        return self.encode(texts, prompt_name=prompt_name, prompt=prompt, show_progress=show_progress)

    def resolve_prompt(self, *, prompt_name: str | None = None, prompt: str | None = None) -> str:
        """The prompt text a call with these arguments uses ("" for none); ConfigError for an unknown name."""
        return resolve_prompt(self.prompts, self.default_prompt_name, prompt=prompt, prompt_name=prompt_name)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Scores of every row of ``a`` with every row of ``b`` by :attr:`similarity_fn_name`."""
        return similarity_matrix(a, b, self.similarity_fn_name)

    def similarity_pairwise(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Scores of ``a[i]`` with ``b[i]`` by :attr:`similarity_fn_name`."""
        return similarity_pairwise(a, b, self.similarity_fn_name)

    def encode_with_info(
        self,
        texts: str | Iterable[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        show_progress: bool | None = None,
    ) -> EncodeResult:
        """Like :meth:`encode`, plus per text its token count (prompt included) and whether it was
        truncated or chunked."""
        items = as_texts(texts)
        text = self.resolve_prompt(prompt_name=prompt_name, prompt=prompt)
        skip = 0 if self.spec.include_prompt else prompt_length(self._token_spec, text)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        info: list[TextInfo] = []
        progress = self._progress(len(items), show_progress)
        for start in range(0, len(items), SLAB):
            slab = items[start : start + SLAB]
            vectors, slab_info = self._encode_slab(slab, start, progress, (text, skip))
            out[start : start + len(slab)] = vectors
            info.extend(slab_info)
        if progress is not None:
            progress.close()
        return EncodeResult(out, info)

    def _encode_slab(
        self, texts: list[str], start: int, progress: Any, prompt: tuple[str, int]
    ) -> tuple[np.ndarray, list[TextInfo]]:
        config = self.config
        text, prompt_tokens = prompt
        sequences, info = tokenize(self._token_spec, texts, config.long_text, config.chunk_overlap, start, prompt=text)
        width = self._backend.dim
        # Positions pooling leaves out per input: the prompt's, in a text's first (or only) window.
        first = [i == 0 or sequences[i - 1].text_index != s.text_index for i, s in enumerate(sequences)]
        skip = np.array(first, dtype=np.int64) * prompt_tokens if prompt_tokens else None
        inputs = Inputs([s.ids for s in sequences], [s.type_ids for s in sequences], self._tokenizer.pad_id,
                        self._tokenizer.uses_type_ids, skip)  # fmt: skip

        def advance(rows: int) -> None:
            progress.update(rows * len(texts) / len(sequences))

        pooled = run_batches(inputs, self._backend.run, width, batch_size=self.batch_size,
                             max_tokens=config.forward_tokens, pool=self._forward_pool,
                             progress=advance if progress is not None else None,
                             max_padding=self._backend.max_padding)  # fmt: skip
        if len(sequences) == len(texts):
            vectors = pooled
        else:  # chunked texts: token-weighted mean of their windows
            owners = np.array([s.text_index - start for s in sequences])
            weights = np.array([s.weight for s in sequences], dtype=np.float32)[:, None]
            vectors = np.zeros((len(texts), width), dtype=np.float32)
            np.add.at(vectors, owners, pooled * weights)
            totals = np.zeros((len(texts), 1), dtype=np.float32)
            np.add.at(totals, owners, weights)
            vectors /= np.maximum(totals, 1.0)
        return self._finish(vectors), info

    def _finish(self, vectors: np.ndarray) -> np.ndarray:
        """The model's Normalize module, then ``truncate_dim`` (not re-normalised, as sentence-transformers),
        then an explicit ``normalize=True`` (sentence-transformers' ``normalize_embeddings``)."""
        explicit = self.config.normalize is True
        if self.normalizes and not explicit:
            vectors = normalize(vectors)
        return truncate_dim(vectors, self.truncate_dim, renormalize=explicit)

    def _progress(self, total: int, show: bool | None) -> Any:
        show = self.config.show_progress if show is None else show
        return progress_bar(total, show, 4 * self.batch_size, "text", "encoding")

    def save(self, folder: str | Path) -> Path:
        """Write a sentence-transformers folder that sentemb and sentence-transformers both load
        (Dense layers, prompts, default prompt, similarity function and truncate_dim included)."""
        st = replace(self.spec.st, default_prompt_name=self.default_prompt_name or None, truncate_dim=self.truncate_dim)
        plan = SavePlan(
            pooling=self.pooling,
            include_prompt=self.spec.include_prompt,
            normalize=self.normalizes,
            max_length=self.max_length,
            width=self.spec.dense[0].in_features if self.spec.dense else self._backend.dim,
            dense=self.spec.dense,
            st=st,
        )
        if self.spec.static is not None:
            return write_static_model(self.spec, Path(folder), plan)
        return write_st_folder(self.spec, Path(folder), plan)


_OPTIONS = {f.name for f in fields(EncoderConfig)} - {"model"}


def load(
    model: str | Path | None = None, *, config: EncoderConfig | None = None, **options: Unpack[LoadOptions]
) -> Encoder:
    """Load a model by local path or hub id (default: ``config.model``, else all-MiniLM-L6-v2, offline)
    and return its encoder.

    ``options`` are :class:`EncoderConfig` fields (device, backend, precision, pooling, normalize,
    max_length, long_text, batch_size, forward_tokens, ...), typed by :class:`LoadOptions`.
    """
    return _build(load_config(model, config, dict(options)))


def progress_bar(total: int, show: bool | None, threshold: int, unit: str, desc: str) -> Any:
    """A tqdm bar for ``total`` inputs, or None when progress is off (``show`` None: on for more than
    ``threshold`` inputs on a terminal)."""
    if show is None:
        show = total > threshold and sys.stderr.isatty()
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True)


def load_config(model: str | Path | None, config: EncoderConfig | None, options: dict[str, Any]) -> EncoderConfig:
    """The config :func:`load` builds from its arguments (an unknown option is a ConfigError naming the valid ones)."""
    if "dtype" in options:
        raise ConfigError(f"dtype={options['dtype']!r} is not an option; pass precision= (fp32, fp16, bf16 or int8)")
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown}; valid options: {sorted(_OPTIONS)}")
    base = config or EncoderConfig()
    return base.replace(model=str(base.model if model is None else model), **options)


def _build(config: EncoderConfig) -> Encoder:
    machine = Machine.here()
    resolved, spec = open_model(config, machine)

    def sample_pass(chosen: EncoderConfig, candidate: Backend) -> None:  # one timed pass of auto's measurement
        loaded = candidate.tokenizer or load_hf_tokenizer(str(spec.transformer_dir), chosen.trust_remote_code)
        plan = runtime_plan(chosen, spec, candidate, machine, ())
        Encoder(chosen.replace(show_progress=False), resolved, spec, loaded, candidate, plan=plan,
                machine=machine).encode(list(SAMPLE))  # fmt: skip

    asked = config
    head = Pooled(config.pooling or spec.pooling, spec.dense)
    config, backend, choice = choose_backend(spec, config, sample_pass, machine=machine, head=head)
    tokenizer = backend.tokenizer or load_hf_tokenizer(str(spec.transformer_dir), config.trust_remote_code)
    truncate = config.truncate_dim or spec.st.truncate_dim
    if truncate is not None and truncate > backend.dim:
        width = backend.dim
        raise ConfigError(f"truncate_dim={truncate} is more than this model's width {width}; pass 1..{width}")
    why = explain(asked, config, choice.describe() if choice is not None else None, machine, spec)
    plan = runtime_plan(config, spec, backend, machine, why)
    encoder = Encoder(config, resolved, spec, tokenizer, backend, plan=plan, machine=machine, choice=choice)
    encoder.resolve_prompt()  # an unknown default_prompt_name fails at load, naming the model's prompts
    return encoder


def runtime_plan(
    config: EncoderConfig, spec: ModelSpec, backend: Backend, machine: Machine, why: tuple[str, ...]
) -> RuntimePlan:
    """The plan of an embedding model whose backend is built: what runs, on how many streams, how wide."""
    return RuntimePlan(
        kind="embedding",
        backend=backend.name,
        precision=config.precision.value,
        device=backend.device,
        batch_size=batch_size(config, backend.device),
        streams=backend.streams,
        threads=backend.threads,
        width=config.truncate_dim or spec.st.truncate_dim or backend.dim,
        graph=backend.graph,
        why=why,
        machine=machine_line(machine),
    )
