"""`serve`: one command runs the migrations, the API and N worker processes beside it.

Workers are child processes of a WorkerPool (training never runs in the API process). A worker
that dies is restarted; on SIGTERM/SIGINT the API stops accepting requests and every worker gets
SIGTERM, hands its running job back to the queue and exits within the grace period.
"""

from __future__ import annotations

import gc
import logging
import signal

import uvicorn

from service.api.app import create_asgi_app
from service.api.auth import KeyRing
from service.api.http_server import server_config
from service.config import Settings
from service.storage.migrate import rekey_legacy_owners, upgrade
from service.worker_pool import WorkerPool

log = logging.getLogger("service.serve")


def serve(settings: Settings) -> None:
    upgrade(settings.database_url)
    rekey_legacy_owners(settings)
    pool = WorkerPool(settings, settings.workers)
    pool.start()
    try:
        run_api(settings)
    finally:
        pool.stop()


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def bind_address(settings: Settings) -> str:
    """Without API keys the API is open to anyone who can reach it: loopback only, then."""
    keys = KeyRing.from_settings(settings)
    if keys.enabled:
        log.info("authentication on: %s", keys.summary)
        return settings.host
    if settings.host not in LOOPBACK:
        log.warning(
            "no API keys (SERVICE_API_KEYS): the API is unauthenticated, so it binds to "
            "127.0.0.1 instead of %s",
            settings.host,
        )
        return "127.0.0.1"
    log.warning(
        "no API keys (SERVICE_API_KEYS): the API is unauthenticated, on %s only", settings.host
    )
    return settings.host


def run_api(settings: Settings) -> None:
    """Run the API in this process until SIGINT/SIGTERM (uvicorn handles both gracefully)."""
    app = create_asgi_app(settings)
    # Everything imported so far lives as long as the process: keep it out of the garbage
    # collector's scans, which otherwise show up as latency spikes under load.
    gc.collect()
    gc.freeze()
    config = server_config(app, settings, bind_address(settings))
    # uvicorn shuts down gracefully, restores the handlers it found and re-raises the signal.
    # Handlers that only log let the caller go on to stop the workers and exit cleanly.
    previous = {sig: signal.signal(sig, _note_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _note_signal(signum: int, _frame: object) -> None:
    log.info("stopping on signal %d", signum)
