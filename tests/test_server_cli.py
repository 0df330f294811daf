"""`sentemb serve` options and ServerSettings validation (nothing here starts a server)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
import httpx
from click.testing import CliRunner

from sentemb.cli import main
from sentemb.errors import ConfigError
from sentemb.server import ServerSettings


def test_defaults_bind_loopback_without_cors():
    settings = ServerSettings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.cors_origins == ()
    assert settings.api_key is None
    assert settings.max_inputs == 2048
    # idle connections outlive the clients' own idle timeout, so a client never reuses a closing one
    assert settings.keep_alive_seconds > httpx.Limits().keepalive_expiry


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"queue_size": 10, "max_inputs": 20}, "queue_size"),
        ({"api_key": "  "}, "api_key"),
        ({"port": 70000}, "port"),
        ({"max_chars": 0}, "max_chars"),
        ({"max_wait_ms": -1}, "max_wait_ms"),
        ({"keep_alive_seconds": -1}, "keep_alive_seconds"),
    ],
)
def test_settings_refuse_values_that_cannot_work(changes, message):
    with pytest.raises(ConfigError, match=message):
        ServerSettings(**changes)


def test_serve_help_lists_the_issue_flags():
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    for flag in (
        "--host",
        "--port",
        "--api-key",
        "--max-inputs",
        "--max-chars",
        "--max-body-bytes",
        "--cors-origin",
        "--long-text",
        "--backend",
        "--precision",
        "SENTEMB_API_KEY",
    ):
        assert flag in result.output


def test_bad_settings_are_a_usage_error_before_the_model_loads():
    result = CliRunner().invoke(main, ["serve", "--queue-size", "4", "--max-inputs", "8"])
    assert result.exit_code == 2
    assert "queue_size" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("flags", "backend"), [((), "auto"), (("--backend", "onnx"), "onnx")])
def test_the_server_runs_the_backend_measured_fastest_unless_told(monkeypatch, flags, backend):
    import sentemb.server
    from sentemb.cli import serve as serve_command

    loaded: dict = {}

    def load(kind):
        return lambda **params: loaded.setdefault(kind, params)

    monkeypatch.setattr(serve_command, "load_encoder", load("encoder"))
    monkeypatch.setattr(serve_command, "load_reranker", load("reranker"))
    monkeypatch.setattr(sentemb.server, "serve", lambda encoder, settings, **kw: None)
    result = CliRunner().invoke(main, ["serve", "--reranker", "./cross-encoder", "--rerank-rescore", *flags])
    assert result.exit_code == 0, result.output
    assert loaded["encoder"]["backend"] == loaded["reranker"]["backend"] == backend
    assert loaded["reranker"]["rescore"] is True and loaded["reranker"]["model"] == "./cross-encoder"
