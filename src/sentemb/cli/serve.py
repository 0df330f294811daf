"""``sentemb serve [MODEL]``: the OpenAI-compatible embeddings service (extra: ``sentemb[server]``)."""

from __future__ import annotations

import logging
import os
from typing import Any

import click

from sentemb.cli.options import EXIT_USAGE, CliError, encoder_options, handle_errors, load_encoder, split_encoder_params
from sentemb.errors import ConfigError

# A server's cores are shared: the event loop, the HTTP clients and the model's OpenMP threads all want
# them. With OpenMP's default, threads that finish a parallel region spin, taking the core that another
# thread (or a descheduled teammate) needs; on a busy 2-core machine that stalled forward passes and
# halved served throughput (benchmarks/serve_throughput.py). Passive waiting yields the core.
# Must be set before torch loads; an OMP_WAIT_POLICY in the environment wins.
OMP_WAIT_POLICY = "PASSIVE"


@click.command("serve")
@encoder_options(positional_model=True)
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 exposes it to the network."
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port.")
@click.option(
    "--api-key",
    envvar="SENTEMB_API_KEY",
    default=None,
    metavar="KEY",
    help="Require 'Authorization: Bearer KEY' on every route but /health [env: SENTEMB_API_KEY].",
)
@click.option(
    "--served-model-name",
    "model_names",
    multiple=True,
    metavar="NAME",
    help="Name(s) clients send as 'model' (repeatable) [default: the model's id and short name].",
)
@click.option("--max-inputs", type=click.IntRange(min=1), default=2048, show_default=True, help="Inputs per request.")
@click.option(
    "--max-chars",
    type=click.IntRange(min=1),
    default=32_768,
    show_default=True,
    help="Characters per input, cut before tokenising (a 400 with --long-text error).",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=16 * 1024 * 1024,
    show_default=True,
    help="Largest request body; 413 past it.",
)
@click.option(
    "--queue-size",
    type=click.IntRange(min=1),
    default=8192,
    show_default=True,
    help="Inputs waiting for the model before requests get 429.",
)
@click.option(
    "--max-wait-ms",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="How long a micro-batch waits for more requests.",
)
@click.option(
    "--batch-tokens",
    type=click.IntRange(min=1),
    default=8192,
    show_default=True,
    help="Estimated tokens per micro-batch.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Allow browser calls from this origin (repeatable); CORS is off without it.",
)
@click.option(
    "--drain-seconds",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="After SIGTERM, answer /ready with 503 this long before closing the listener.",
)
@click.option(
    "--keep-alive",
    "keep_alive_seconds",
    type=click.FloatRange(min=0),
    default=75.0,
    show_default=True,
    help="Seconds an idle keep-alive connection stays open (keep it above your clients' and proxies').",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="After the drain period, how long in-flight requests may take before they are cut.",
)
@click.option(
    "--access-log/--no-access-log", default=True, show_default=True, help="One log line per request (no texts)."
)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
@handle_errors
def serve(**params: Any) -> None:
    """Serve embeddings over HTTP, compatible with OpenAI's /v1/embeddings.

    Concurrent requests are merged into micro-batches (--batch-tokens, --max-wait-ms).

    \b
    Examples:
      sentemb serve                                   # all-MiniLM-L6-v2 on 127.0.0.1:8000
      SENTEMB_API_KEY=secret sentemb serve --port 9000
      curl -s 127.0.0.1:8000/v1/embeddings -H 'Content-Type: application/json' \\
           -d '{"model": "all-MiniLM-L6-v2", "input": ["a sentence"]}'
    """
    encoder_params, options = split_encoder_params(params)
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)  # before torch is imported (below)
    try:
        from sentemb import server
    except ImportError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    log_level = options.pop("log_level")
    try:
        settings = server.ServerSettings(
            host=options["host"],
            port=options["port"],
            api_key=options["api_key"],
            model_names=options["model_names"],
            max_inputs=options["max_inputs"],
            max_chars=options["max_chars"],
            max_body_bytes=options["max_body_bytes"],
            queue_size=options["queue_size"],
            max_wait_ms=options["max_wait_ms"],
            token_budget=options["batch_tokens"],
            cors_origins=options["cors_origins"],
            drain_seconds=options["drain_seconds"],
            access_log=options["access_log"],
            shutdown_timeout=options["shutdown_timeout"],
            keep_alive_seconds=options["keep_alive_seconds"],
        )
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    _configure_logging(log_level)
    encoder = load_encoder(**encoder_params)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        click.echo(
            f"warning: listening on {settings.host} without --api-key: anyone who can reach it may use it", err=True
        )
    server.serve(encoder, settings, log_level=log_level)


def _configure_logging(level: str) -> None:
    """sentemb's own loggers to stderr (uvicorn configures its own)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("sentemb")
    logger.addHandler(handler)
    logger.setLevel(level.upper())


if __name__ == "__main__":  # pragma: no cover - `python -m sentemb.cli.serve`
    serve()
