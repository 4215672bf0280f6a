"""`GET /metrics`: Prometheus's text format, for operators (admin keys when keys are on).

What this process (or every process sharing PROMETHEUS_MULTIPROC_DIR) counted, followed by the
fleet's state as the database holds it at this moment (service/fleet_metrics.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import DatabaseDep, PredictorsDep, PrincipalDep, SettingsDep
from service.errors import Forbidden
from service.fleet_metrics import fleet_exposition
from service.metrics_registry import process_exposition
from service.schemas import ErrorOut

router = APIRouter(tags=["operations"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format 0.0.4",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    403: {"model": ErrorOut, "description": "Only admin keys read the metrics"},
}


@router.get("/metrics", response_class=Response, responses=RESPONSES)
def get_metrics(
    db: DatabaseDep, settings: SettingsDep, predictors: PredictorsDep, principal: PrincipalDep
) -> Response:
    """Request counts by route and status, predict latency, predictor cache hits and batch
    sizes (this host's API processes); queue depth, running jobs, worker heartbeat ages and
    recent job durations (the whole fleet, from the database). Admin keys only when keys are
    on: the figures cover every owner's jobs."""
    if not principal.admin:
        raise Forbidden("reading metrics needs an admin key (SERVICE_ADMIN_KEYS)")
    predictors.publish_counts()  # this process's latest, not those of its last refresh
    body = process_exposition() + fleet_exposition(db, settings.lease_seconds)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
