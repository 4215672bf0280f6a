"""The HTTP server's configuration: how the API listens, and the bounds each connection has."""

from __future__ import annotations

import logging
import math
import resource

import uvicorn
from starlette.types import ASGIApp

from service.api.connection_limits import ConnectionLimits, bounded_protocol
from service.config import Settings

log = logging.getLogger("service.api.connections")

# Descriptors the API process needs beside its connections: the database's files, the
# listening socket, the event loop's own, the worker pipes of `serve`, logs.
FD_HEADROOM = 64


def server_config(app: ASGIApp, settings: Settings, host: str) -> uvicorn.Config:
    """uvicorn's configuration for the API. Raises the process's open-file limit to fit the
    connection cap first (see fit_open_file_limit), since the server's cap depends on it."""
    limits = ConnectionLimits.from_settings(
        settings, max_connections=fit_open_file_limit(settings.max_connections)
    )
    return uvicorn.Config(
        app,
        host=host,
        port=settings.port,
        log_level="info",
        # Per-request log lines cost more than a cached prediction; errors are still logged.
        access_log=False,
        proxy_headers=settings.proxy_headers,
        http=bounded_protocol(limits),
        # The API has no WebSocket routes, and an upgraded connection would leave the bounds
        # the protocol keeps: an Upgrade header is ignored, the request served as plain HTTP.
        ws="none",
        # Only uvicorn's own bookkeeping reads this whole number; the protocol keeps the
        # exact setting.
        timeout_keep_alive=math.ceil(settings.keep_alive_seconds),
    )


def fit_open_file_limit(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE so max_connections plus FD_HEADROOM descriptors fit, as far
    as the hard limit allows; the connection cap that fits (lowered, with a warning, if the
    hard limit is too low). Without this, connections past the limit would make accept() and
    the database's opens fail alike."""
    wanted = max_connections + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if _fits(soft, wanted):
        return max_connections
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        soft = raised
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, raised, exc)
    if _fits(soft, wanted):
        return max_connections
    fitted = max(1, soft - FD_HEADROOM)
    log.warning(
        "the open-file limit is %d (hard limit %s): at most %d connections at once instead of "
        "SERVICE_MAX_CONNECTIONS=%d; raise the hard limit (ulimit -Hn) to allow more",
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        fitted,
        max_connections,
    )
    return fitted


def _fits(limit: int, wanted: int) -> bool:
    return limit == resource.RLIM_INFINITY or limit >= wanted
