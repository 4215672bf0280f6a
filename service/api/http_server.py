"""The HTTP server's configuration: how the API listens, and the bounds each connection has."""

from __future__ import annotations

import uvicorn
from starlette.types import ASGIApp

from service.config import Settings


def server_config(app: ASGIApp, settings: Settings, host: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=settings.port,
        log_level="info",
        # Per-request log lines cost more than a cached prediction; errors are still logged.
        access_log=False,
        proxy_headers=settings.proxy_headers,
        timeout_keep_alive=int(settings.keep_alive_seconds),
    )
