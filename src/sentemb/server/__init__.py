"""``sentemb serve``: an OpenAI-compatible embeddings service (its dependencies come with the base install).

from sentemb.server import ServerSettings, create_app, serve
serve(sentemb.load(), ServerSettings(port=8000))
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import prometheus_client  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"the sentemb server needs its extra: pip install 'sentemb[server]' ({exc})") from None

from sentemb.server.app import create_app
from sentemb.server.runner import build_server, serve, serve_in_background
from sentemb.server.settings import ServerSettings

__all__ = ["ServerSettings", "build_server", "create_app", "serve", "serve_in_background"]
