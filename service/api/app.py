"""The FastAPI application: built by a factory, so nothing connects at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp

from service import __version__
from service.api.auth import KeyRing
from service.api.body_limit import BodySizeLimit
from service.api.error_handlers import install_error_handlers
from service.api.gate import Gate
from service.api.instrumentation import RequestMetrics
from service.api.micro_batch import MicroBatcher
from service.api.openapi import install_openapi
from service.api.predict_fast_path import PredictFastPath
from service.api.routes import (
    dashboard,
    datasets,
    events,
    export,
    health,
    jobs,
    metrics,
    mlflow,
    models,
    sweeps,
    v2,
    workers,
)
from service.api.state import ApiState
from service.config import Settings
from service.inference import PredictorCache
from service.tuning import DELETION_POLL_SECONDS

log = logging.getLogger("service.api")

DESCRIPTION = """
Submit a training job (data + a feed-forward network + training settings) and get an id at once.
A background worker trains it; poll `GET /jobs/{id}`, watch `GET /models/{id}/loss` grow, then
`POST /models/{id}/predict` with raw inputs. Errors are `{"error": kind, "detail": sentence}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    state = ApiState(settings, KeyRing.from_settings(settings), MicroBatcher())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.open()
        watcher = asyncio.create_task(watch_deletions(state.predictors))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            state.db.dispose()

    app = FastAPI(
        title="Neural network training service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.api = state
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        route_limits=datasets.body_limits(settings),
    )
    app.include_router(jobs.router)
    app.include_router(datasets.router)
    app.include_router(sweeps.router)
    app.include_router(models.router)
    app.include_router(export.router)
    app.include_router(workers.router)
    app.include_router(health.router)
    app.include_router(v2.router)
    app.include_router(mlflow.router)
    app.include_router(events.router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)
    return app


async def watch_deletions(predictors: PredictorCache) -> None:
    """Drop models deleted through any API process from this one's cache, several times a
    second: a deleted model stops answering everywhere, with no query per prediction."""
    while True:
        try:
            await asyncio.to_thread(predictors.refresh)
        except SQLAlchemyError as exc:  # the database is briefly away: try again next time
            log.warning("could not read the model deletion log: %s", exc)
        await asyncio.sleep(DELETION_POLL_SECONDS)


def create_asgi_app(settings: Settings | None = None) -> ASGIApp:
    """What the server runs: the app behind the predict fast path, behind the gate that
    authenticates from the headers before any body is read.

    The fast path sits outside FastAPI, so the common predict request skips even the
    framework's outer middleware; everything else (lifespan included) passes through. Around
    it all, every request is counted for /metrics.
    """
    settings = settings or Settings()
    app = create_app(settings)
    state: ApiState = app.state.api
    fast_path = PredictFastPath(app, state=state, max_body_bytes=settings.max_body_bytes)
    # Outermost, so the gate's refusals and the fast path's answers are counted too.
    return RequestMetrics(Gate(fast_path, state.keys), lambda: app.openapi()["paths"])
