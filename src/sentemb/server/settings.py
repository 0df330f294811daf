"""The server's own options, one frozen keyword-only dataclass (the encoder keeps :class:`EncoderConfig`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from sentemb.errors import ConfigError

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """How the HTTP service listens, whom it lets in and how much work it accepts.

    ``model_names`` are the names clients may send as ``model``; the first is the one the service
    reports. Empty means: the encoder's model name and its last path segment.
    """

    host: str = LOOPBACK
    port: int = 8000
    api_key: str | None = None
    model_names: tuple[str, ...] = ()
    max_inputs: int = 2048  # inputs per request
    max_chars: int = 32_768  # characters per input, cut before tokenising
    max_body_bytes: int = 16 * 1024 * 1024  # request body, 413 past it
    queue_size: int = 8192  # inputs waiting for the model; 429 past it
    max_wait_ms: float = 5.0  # how long a micro-batch waits to fill up
    token_budget: int = 8192  # estimated tokens per micro-batch
    cors_origins: tuple[str, ...] = ()
    drain_seconds: float = 2.0  # after SIGTERM: /ready says 503 this long before the listener closes
    shutdown_timeout: float = 30.0  # then in-flight requests get this long to finish
    ready_timeout: float = 10.0  # /ready's forward pass must finish within this
    # An idle keep-alive connection is closed after this long. Longer than clients keep idle connections
    # (httpx and the openai client: 5 s), or a client may reuse one just as the server closes it and get
    # a connection error (seen with uvicorn's default of 5 s: 2 of 9,301 load-test requests).
    keep_alive_seconds: float = 75.0
    access_log: bool = True
    max_queue_seconds: float = field(
        default=3.0,
        metadata={"help": "refuse a request (429 + Retry-After) that would wait longer than this at the measured rate"},
    )
    batch_seconds: float = field(
        default=0.25,
        metadata={"help": "model time per micro-batch; large requests are sliced so small ones wait about this long"},
    )
    max_connections: int = field(
        default=512,
        metadata={"help": "open connections at most; more are answered 503 and closed (keep below ulimit -n)"},
    )
    read_timeout: float = field(
        default=30.0,
        metadata={"help": "seconds a client gets to send a request's headers, and again its body (408 past it)"},
    )
    max_header_bytes: int = field(
        default=32 * 1024,
        metadata={"help": "request line and headers at most this many bytes (431 past it)"},
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "model_names", tuple(self.model_names))
        set_(self, "cors_origins", tuple(self.cors_origins))
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key is empty; pass a non-empty key or none at all")
        if not 0 <= int(self.port) <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        for name in (
            "max_inputs", "max_chars", "max_body_bytes", "queue_size", "token_budget", "max_connections",
            "max_header_bytes",
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
        for name in ("ready_timeout", "max_queue_seconds", "batch_seconds", "read_timeout"):
            if float(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")

    def replace(self, **changes: object) -> ServerSettings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
