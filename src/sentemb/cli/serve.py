"""``sentemb serve [MODEL]``: the OpenAI-compatible embeddings service."""

from __future__ import annotations

import logging
import os
from typing import Any

import click

from sentemb.cli.common import encoder_options, handle_errors, load_encoder, load_reranker, split_encoder_params
from sentemb.cli.flags import add_flags, build
from sentemb.cli.sparse import load_sparse_model
from sentemb.server.settings import ServerSettings

# A server's cores are shared: the event loop, the HTTP clients and the model's OpenMP threads all want
# them. With OpenMP's default, threads that finish a parallel region spin, taking the core that another
# thread (or a descheduled teammate) needs; on a busy 2-core machine that stalled forward passes and
# halved served throughput (benchmarks/serve_throughput.py). Passive waiting yields the core.
# Must be set before torch loads; an OMP_WAIT_POLICY in the environment wins.
OMP_WAIT_POLICY = "PASSIVE"


@click.command("serve")
@encoder_options(positional_model=True)
@add_flags(ServerSettings)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
@handle_errors
def serve(**params: Any) -> None:
    """Serve embeddings (OpenAI's /v1/embeddings) and rerankers (Cohere's /v1/rerank, TEI's /rerank) over HTTP.

    Concurrent requests are merged into micro-batches (--batch-tokens, --max-wait-ms). Without --backend
    the server runs --backend auto: the backend measured fastest for the model on this machine.

    \b
    Examples:
      sentemb serve                                   # all-MiniLM-L6-v2 on 127.0.0.1:8000
      SENTEMB_API_KEY=secret sentemb serve --port 9000
      sentemb serve --reranker ./bge-reranker-base    # + POST /v1/rerank, /v2/rerank, /rerank
      sentemb serve --sparse-model ./splade           # + POST /embed_sparse; /v1/embeddings by name
      curl -s 127.0.0.1:8000/v1/embeddings -H 'Content-Type: application/json' \\
           -d '{"model": "all-MiniLM-L6-v2", "input": ["a sentence"]}'
    """
    encoder_params, options = split_encoder_params(params)
    if encoder_params.get("backend") is None:  # not given: a server runs the backend measured fastest here
        encoder_params["backend"] = "auto"
    log_level = options.pop("log_level")
    settings = build(ServerSettings, options)  # a bad value is a usage error before the model loads
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)  # before torch is imported (below)
    from sentemb import server  # ImportError without the extra: one line naming it (translate_errors)

    _configure_logging(log_level)
    encoder = load_encoder(**encoder_params)
    # each reranker runs where the embedding model does (the same runtime flags), under its own name
    from sentemb.rerank import EMBEDDING_OPTIONS

    runtime = {k: v for k, v in encoder_params.items() if k not in (*EMBEDDING_OPTIONS, "model_arg")}
    rerankers = [load_reranker(rescore=settings.rerank_rescore, **{**runtime, "model": name})
                 for name in settings.rerankers]  # fmt: skip
    sparse = [load_sparse_model(name, runtime) for name in settings.sparse_models]  # the same runtime flags
    if settings.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        click.echo(
            f"warning: listening on {settings.host} without --api-key: anyone who can reach it may use it", err=True
        )
    server.serve(encoder, settings, log_level=log_level, rerankers=rerankers, sparse_models=sparse)


def _configure_logging(level: str) -> None:
    """sentemb's own loggers to stderr (uvicorn configures its own)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("sentemb")
    logger.addHandler(handler)
    logger.setLevel(level.upper())


if __name__ == "__main__":  # pragma: no cover - `python -m sentemb.cli.serve`
    serve()
