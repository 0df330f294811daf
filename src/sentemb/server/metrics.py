"""Prometheus metrics in a registry of their own, so several apps can live in one process."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sentemb.server.batcher import BatchReport

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 262144)
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Counters and histograms of one app; no label ever holds request content."""

    def __init__(self, queue_depth: Callable[[], float], tokens_per_second: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "sentemb_requests", "HTTP requests by route, method and status", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "sentemb_request_seconds", "HTTP request latency", ["route"], buckets=_SECONDS, registry=r
        )
        self.inputs = Counter("sentemb_inputs", "Texts embedded", registry=r)
        self.rerank_pairs = Counter("sentemb_rerank_pairs", "(query, document) pairs scored, by reranker", ["model"],
                                    registry=r)  # fmt: skip
        self.tokens = Counter("sentemb_tokens", "Tokens in the texts embedded", registry=r)
        self.truncated = Counter("sentemb_truncated_inputs", "Texts cut to fit the model", registry=r)
        self.rejected = Counter(
            "sentemb_rejected_requests", "Requests refused or dropped before the model ran", ["reason"], registry=r
        )
        self.batch_inputs = Histogram(
            "sentemb_batch_inputs", "Texts per micro-batch", buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "sentemb_batch_requests", "Requests merged into one micro-batch", buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "sentemb_batch_tokens", "Tokens per micro-batch", buckets=_TOKEN_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "sentemb_batch_seconds", "Model time per micro-batch", buckets=_SECONDS, registry=r
        )
        self.in_flight = Gauge("sentemb_embedding_requests_in_flight", "Embedding requests being answered", registry=r)
        self.queue = Gauge("sentemb_queue_inputs", "Texts waiting for the model", registry=r)
        self.queue.set_function(queue_depth)
        self.rate = Gauge(
            "sentemb_estimated_tokens_per_second", "The model's measured rate, which admission uses", registry=r
        )
        self.rate.set_function(tokens_per_second)
        self.connections = Gauge("sentemb_connections", "Open connections holding a slot", registry=r)
        self.dropped_connections = Counter(
            "sentemb_dropped_connections",
            "Connections closed or refused without a request answered: evicted_idle, evicted_headers (their "
            "slot went to a new connection), client_cap, server_full, header_timeout, body_timeout, "
            "headers_too_large, invalid_http",
            ["reason"],
            registry=r,
        )

    def dropped_connection(self, reason: str) -> None:
        self.dropped_connections.labels(reason).inc()

    def on_batch(self, report: BatchReport) -> None:
        self.batch_inputs.observe(report.inputs)
        self.batch_requests.observe(report.requests)
        self.batch_tokens.observe(report.tokens)
        self.batch_seconds.observe(report.seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
