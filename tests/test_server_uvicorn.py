"""The uvicorn internals sentemb.server.protocol builds on: present in the installed uvicorn, and the
installed version inside the range pyproject.toml allows. When uvicorn changes them, these tests fail
first, naming what moved, instead of the server misbehaving under load."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

import uvicorn
from packaging.specifiers import SpecifierSet
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from sentemb.errors import ConfigError
from sentemb.server import protocol

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
UPGRADE_HINT = (
    "sentemb.server.protocol subclasses uvicorn's HttpToolsProtocol; re-run tests/test_server_http.py, "
    "tests/test_server_sigterm.py and benchmarks/serve_overload.py --slow-clients on this uvicorn, adapt "
    "GuardedProtocol, then widen SUPPORTED_UVICORN and pyproject.toml's bound together"
)


def uvicorn_requirement() -> str:
    found = re.search(r'^\s*"(uvicorn[^"]*)"', PYPROJECT.read_text(), re.MULTILINE)  # (no tomllib on 3.10)
    assert found, "pyproject.toml lists no uvicorn dependency"
    return found.group(1)


def test_pyproject_bounds_uvicorn_to_the_tested_range():
    requirement = uvicorn_requirement()
    assert requirement == f"uvicorn{protocol.SUPPORTED_UVICORN}", "pyproject.toml and SUPPORTED_UVICORN disagree"
    assert "<" in protocol.SUPPORTED_UVICORN, "an open-ended range admits untested uvicorn internals"


def test_the_installed_uvicorn_is_in_the_tested_range():
    assert uvicorn.__version__ in SpecifierSet(protocol.SUPPORTED_UVICORN), (
        f"uvicorn {uvicorn.__version__} is outside {protocol.SUPPORTED_UVICORN}: {UPGRADE_HINT}"
    )


def test_the_protocol_callbacks_and_request_state_it_uses_exist():
    protocol.check_uvicorn()
    init = inspect.getsource(HttpToolsProtocol.__init__)
    gone = [name for name in ("loop", "transport", "client", "cycle") if f"self.{name}" not in init]
    cycle = inspect.getsource(RequestResponseCycle.__init__)
    gone += [f"cycle.{name}" for name in protocol.CYCLE_ATTRIBUTES if f"self.{name}" not in cycle]
    response = inspect.getsource(HttpToolsProtocol.on_headers_complete)
    if "on_response=self.on_response_complete" not in response:
        gone.append("on_response_complete as the cycle's callback")
    assert not gone, f"uvicorn {uvicorn.__version__} no longer has {', '.join(gone)}: {UPGRADE_HINT}"


def test_a_uvicorn_without_them_is_refused_with_the_fix(monkeypatch):
    monkeypatch.delattr(HttpToolsProtocol, "on_response_complete")
    with pytest.raises(ConfigError, match=r"pip install 'uvicorn>=0\.29,<0\.56'"):
        protocol.check_uvicorn()
