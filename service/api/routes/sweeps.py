"""Sweeps: submit a search over hyperparameters, follow its trials, cancel, delete."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from service.api.auth import Principal
from service.api.deps import BlobStoreDep, DatabaseDep, PrincipalDep, SettingsDep, require_json
from service.api.error_handlers import invalid_body
from service.api.idempotency import IdempotencyKey, check_key, request_digest
from service.api.routes.jobs import dataset_of
from service.api.routes.models import MIN_LOSS_POINTS, loss_history_out
from service.config import Settings
from service.errors import InvalidInput
from service.loss_curve import read_loss_page
from service.quota import Quota
from service.schemas import MAX_OFFSET, ErrorOut, JobCreate
from service.storage import queue
from service.storage.blobs import BlobStore
from service.storage.db import Database
from service.storage.models import Job, Sweep, utcnow
from service.submission import build_trials
from service.sweeps import records, search
from service.sweeps.schemas import SweepCreate, SweepList, SweepLossOut, SweepOut

router = APIRouter(prefix="/sweeps", tags=["sweeps"])
SWEEP_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SweepCreate"}}},
    }
}
# GET /sweeps/{id}/loss: each trial's curve thinned to this many points by default, and at most
# this many (a sweep holds up to SERVICE_MAX_TRIALS_PER_SWEEP trials).
DEFAULT_SWEEP_LOSS_POINTS = 500
MAX_SWEEP_LOSS_POINTS = 10_000
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No sweep with this id"}
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        404: {"model": ErrorOut, "description": "No dataset with the base's dataset_id"},
        415: {"model": ErrorOut, "description": "The body is not JSON"},
        422: {"model": ErrorOut, "description": "The sweep, its base job or a trial is invalid"},
        429: {
            "model": ErrorOut,
            "description": "The trials would pass this API key's quota of active jobs or "
            "stored bytes; Retry-After says when to try again",
        },
    },
    dependencies=[Depends(require_json)],
    openapi_extra=SWEEP_BODY,
)
async def submit_sweep(
    http: Request,
    response: Response,
    db: DatabaseDep,
    blob_store: BlobStoreDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> SweepOut:
    """Queue one job per trial; trials that share a shape train together as one stacked model.
    Each trial is an ordinary job: /jobs/{id}, /loss, /predict, /events all take its id."""
    check_key(idempotency_key)
    body = await http.body()
    # Validating and encoding N trials' data is CPU work: off the event loop.
    return await run_in_threadpool(
        queue_sweep, body, response, db, settings, principal, blob_store, idempotency_key
    )


def _parsed(body: bytes) -> tuple[SweepCreate, JobCreate]:
    """The sweep and its base job; a body that is neither is reported as any invalid body."""
    try:
        request = SweepCreate.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_body(exc) from None
    try:
        base = JobCreate.model_validate(request.base)
    except ValidationError as exc:
        raise invalid_body(exc, "base") from None
    return request, base


def queue_sweep(
    body: bytes,
    response: Response,
    db: Database,
    settings: Settings,
    principal: Principal,
    blob_store: BlobStore,
    idempotency_key: str | None = None,
) -> SweepOut:
    request, base = _parsed(body)
    n_trials = search.grid_size(request)
    if n_trials > settings.max_trials_per_sweep:
        raise InvalidInput(
            f"the sweep has {n_trials} trials, above the limit of {settings.max_trials_per_sweep}"
        )
    params = search.trial_params(request)
    requests = search.trial_requests(base, request.base, params)
    dataset = dataset_of(db, base, principal)
    sweep = Sweep(
        id=str(uuid.uuid4()),
        owner=principal.owner,
        name=request.name,
        search=request.model_dump(mode="json", include={"grid", "random"}, exclude_none=True),
        n_trials=len(requests),
        cancel_requested=False,
        idempotency_key=idempotency_key,
        # The body as sent, whatever its key order or number formatting.
        request_hash=request_digest(request) if idempotency_key is not None else None,
    )
    jobs = build_trials(requests, settings, dataset)
    queued_at = utcnow()
    for number, (job, trial) in enumerate(zip(jobs, params, strict=True)):
        # A microsecond apart: the trials list, and are claimed, in the order they were drawn.
        job.created_at = queued_at + timedelta(microseconds=number)
        job.owner = principal.owner
        job.sweep_id = sweep.id
        job.trial_params = trial
        job.stack_key = search.stack_key(job.spec)
        if job.name is None:
            job.name = f"{request.name or 'sweep'} {search.describe(trial)}"[:200]
    stored, created = queue.enqueue_sweep(
        db, sweep, jobs, Quota.from_settings(settings), blob_store
    )
    if not created:
        if stored.request_hash != sweep.request_hash:
            raise InvalidInput(
                "this Idempotency-Key was already used with a different request body"
            )
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/sweeps/{stored.id}"
    with db.read() as session:
        return records.sweep_out(session, records.sweep_or_404(session, stored.id, None))


@router.get("")
def list_sweeps(
    db: DatabaseDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> SweepList:
    """Sweeps, newest first, each with its status, counts and best trial."""
    with db.read() as session:
        sweeps, total = records.list_sweeps(session, principal.owner_filter, limit, offset)
    return SweepList(sweeps=sweeps, total=total, limit=limit, offset=offset)


@router.get("/{sweep_id}", responses=NOT_FOUND)
def get_sweep(sweep_id: str, db: DatabaseDep, principal: PrincipalDep) -> SweepOut:
    """The sweep, every trial with its parameters, status and final losses, and the best."""
    with db.read() as session:
        return records.sweep_out(
            session, records.sweep_or_404(session, sweep_id, principal.owner_filter)
        )


@router.get("/{sweep_id}/loss", responses=NOT_FOUND)
def get_sweep_loss(
    sweep_id: str,
    db: DatabaseDep,
    principal: PrincipalDep,
    max_points: Annotated[
        int,
        Query(
            ge=MIN_LOSS_POINTS,
            le=MAX_SWEEP_LOSS_POINTS,
            description="Each trial's history thinned to at most this many epochs, keeping "
            "the lowest and highest loss of each stretch (as GET /models/{id}/loss does).",
        ),
    ] = DEFAULT_SWEEP_LOSS_POINTS,
) -> SweepLossOut:
    """Every trial's loss curve so far, in one answer: what the dashboard's sweep page draws."""
    with db.read() as session:
        sweep = records.sweep_or_404(session, sweep_id, principal.owner_filter)
        trials = session.execute(
            select(Job.id, Job.status)
            .where(Job.sweep_id == sweep.id)
            .order_by(Job.created_at, Job.id)
        ).all()
        curves = [
            loss_history_out(
                trial.id, trial.status, read_loss_page(session, trial.id, 1, None, max_points)
            )
            for trial in trials
        ]
    return SweepLossOut(id=sweep_id, trials=curves)


@router.post(
    "/{sweep_id}/cancel",
    responses={
        **NOT_FOUND,
        409: {"model": ErrorOut, "description": "Every trial already ended"},
    },
)
def cancel_sweep(sweep_id: str, db: DatabaseDep, principal: PrincipalDep) -> SweepOut:
    """Queued trials are cancelled at once, running ones at their next batch; trials that
    already ended keep their models."""
    queue.cancel_sweep(db, sweep_id, principal.owner_filter)
    return get_sweep(sweep_id, db, principal)


@router.delete(
    "/{sweep_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **NOT_FOUND,
        409: {"model": ErrorOut, "description": "Some trial is still queued or running"},
    },
)
def delete_sweep(
    sweep_id: str, db: DatabaseDep, blob_store: BlobStoreDep, principal: PrincipalDep
) -> Response:
    """Delete the sweep with every trial's job, model and loss history."""
    queue.delete_sweep(db, sweep_id, principal.owner_filter, blob_store)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
