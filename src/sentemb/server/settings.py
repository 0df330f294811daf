"""The server's own options, one frozen keyword-only dataclass (the encoder keeps :class:`EncoderConfig`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sentemb.errors import ConfigError
from sentemb.options import option

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """How the HTTP service listens, whom it lets in and how much work it accepts.

    ``model_names`` are the names clients may send as ``model``; the first is the one the service
    reports. Empty means: the encoder's model name and its last path segment.
    """

    host: str = option(LOOPBACK, help="Address to bind; 0.0.0.0 exposes it to the network.")
    port: int = option(8000, help="TCP port.", min=0, max=65535)
    api_key: str | None = option(
        None, help="Require 'Authorization: Bearer KEY' on every route but /health.", metavar="KEY",
        env="SENTEMB_API_KEY",
    )  # fmt: skip
    model_names: tuple[str, ...] = option(
        (), help="Name(s) clients send as 'model' (repeatable) [default: the model's id and short name].",
        flag="--served-model-name", metavar="NAME",
    )  # fmt: skip
    rerankers: tuple[str, ...] = option(
        (), help="A cross-encoder to serve beside the embedding model (repeatable): POST /v1/rerank, /v2/rerank, "
        "/rerank; clients pick it by its name in 'model'.", flag="--reranker", metavar="MODEL",
    )  # fmt: skip
    rerank_rescore: bool = option(
        False, help="With --precision int8: re-score in fp32 the documents that could be in a request's top_n, "
        "so that they come in fp32's order with fp32's scores (the model loads twice).",
    )  # fmt: skip
    sparse_models: tuple[str, ...] = option(
        (), help="A sparse (SPLADE) model to serve beside the others (repeatable): POST /embed_sparse, and "
        "/v1/embeddings when 'model' names it.", flag="--sparse-model", metavar="MODEL",
    )  # fmt: skip
    max_inputs: int = option(2048, help="Inputs (texts, or documents to rerank) per request; 413 past it.", min=1)
    # Not a flag: ``serve --max-chars`` is the encoder's (EncoderConfig.max_chars); this is the cap the
    # served encoder gets when its config sets none, so that a 1 GB input is never tokenised.
    max_chars: int = 32_768
    max_body_bytes: int = option(16 * 1024 * 1024, help="Largest request body; 413 past it.", min=1)
    queue_size: int = option(8192, help="Inputs waiting for the model before requests get 429.", min=1)
    max_wait_ms: float = option(
        5.0, help="How long a micro-batch waits for more requests while the model is busy (an idle model takes "
        "a request at once).", min=0,
    )  # fmt: skip
    micro_batch_tokens: int = option(8192, help="Estimated tokens per micro-batch.", flag="--batch-tokens", min=1)
    cors_origins: tuple[str, ...] = option(
        (), help="Allow browser calls from this origin (repeatable); CORS is off without it.",
        flag="--cors-origin", metavar="ORIGIN",
    )  # fmt: skip
    drain_seconds: float = option(
        2.0, help="After SIGTERM, answer /ready with 503 this long before closing the listener.", min=0
    )
    shutdown_timeout: float = option(
        30.0, help="After the drain period, how long in-flight requests may take before they are cut (503).", min=0
    )
    ready_timeout: float = option(10.0, help="Seconds /ready's forward pass may take before it says 503.", above=0)
    # An idle keep-alive connection is closed after this long. Longer than clients keep idle connections
    # (httpx and the openai client: 5 s), or a client may reuse one just as the server closes it and get
    # a connection error (seen with uvicorn's default of 5 s: 2 of 9,301 load-test requests).
    keep_alive_seconds: float = option(
        75.0, help="Seconds an idle keep-alive connection stays open (keep it above your clients' and proxies').",
        flag="--keep-alive", min=0,
    )  # fmt: skip
    access_log: bool = option(True, help="One log line per request (no texts).")
    max_queue_seconds: float = option(
        3.0, help="Refuse a request (429 + Retry-After) that would wait longer than this at the measured rate.",
        above=0,
    )  # fmt: skip
    batch_seconds: float = option(
        0.25, help="Model time per micro-batch; large requests are sliced so small ones wait about this long.",
        above=0,
    )  # fmt: skip
    max_connections: int = option(
        512, help="Open connections at most (keep it below ulimit -n). When all are taken, a new one takes the "
        "slot of the longest-waiting idle or header-sending connection; 503 only if all are serving requests.",
        min=1,
    )  # fmt: skip
    max_client_connections: int = option(
        256, help="Open connections per client address; past it the client's own waiting connections make room, "
        "429 if all are serving (behind a proxy or NAT all share one address: raise it to --max-connections).",
        min=1,
    )  # fmt: skip
    header_timeout: float = option(
        10.0, help="Seconds a client gets to send a request line and headers (408 past it).", above=0
    )
    read_timeout: float = option(
        30.0, help="Seconds a client gets to send a request's body once its headers are in (408 past it).",
        above=0,
    )  # fmt: skip
    max_header_bytes: int = option(
        32 * 1024, help="Request line and headers at most this many bytes (431 past it).", min=1024
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "model_names", tuple(self.model_names))
        set_(self, "rerankers", tuple(self.rerankers))
        set_(self, "sparse_models", tuple(self.sparse_models))
        set_(self, "cors_origins", tuple(self.cors_origins))
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key is empty; pass a non-empty key or none at all")
        if not 0 <= int(self.port) <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        for name in (
            "max_inputs", "max_chars", "max_body_bytes", "queue_size", "micro_batch_tokens", "max_connections",
            "max_header_bytes", "max_client_connections",
        ):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.queue_size < self.max_inputs:
            raise ConfigError(
                f"queue_size ({self.queue_size}) must be at least max_inputs ({self.max_inputs}), "
                "or a full-size request could never be queued"
            )
        for name in ("max_wait_ms", "drain_seconds", "shutdown_timeout", "keep_alive_seconds"):
            if float(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("ready_timeout", "max_queue_seconds", "batch_seconds", "read_timeout", "header_timeout"):
            if float(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")

    def replace(self, **changes: object) -> ServerSettings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
