"""Training jobs: submit, list, inspect, cancel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from service import fleet
from service.api.auth import Principal
from service.api.deps import (
    BlobStoreDep,
    DatabaseDep,
    PrincipalDep,
    SettingsDep,
    job_or_404,
    require_json,
)
from service.api.error_handlers import invalid_body
from service.api.idempotency import IdempotencyKey, check_key, request_digest
from service.config import Settings
from service.datasets import records as datasets
from service.datasets.training_data import load_job_dataset, sample_rows
from service.errors import Conflict, InvalidInput, NotFound
from service.quota import Quota
from service.schemas import (
    MAX_OFFSET,
    ErrorOut,
    JobCreate,
    JobList,
    JobOut,
    TrainingDataSample,
)
from service.storage import queue
from service.storage.blobs import BlobStore, CorruptBlob
from service.storage.db import Database
from service.storage.models import DatasetRecord, Job, JobStatus
from service.submission import build_job

router = APIRouter(prefix="/jobs", tags=["jobs"])
# GET /jobs/{id}/data: rows of training data a picture can draw, and the most one answer holds.
DEFAULT_SAMPLE_ROWS = 2_000
MAX_SAMPLE_ROWS = 10_000
# The route reads its body itself (to parse it off the event loop); its schema is documented.
JOB_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}}},
    }
}

StatusFilter = Annotated[JobStatus | None, Query(description="Only this status.")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No job with this id"}
}


def job_out(job: Job, alive: set[str] | None = None) -> JobOut:
    """The job as clients see it. With `alive` (the device kinds live workers have), a queued
    job that requires a device none of them has says so in its warnings."""
    # Field names match the table's columns; the stored spec validates into JobSpec.
    out = JobOut.model_validate(job, from_attributes=True)
    # A job that trains from a dataset holds no data of its own for retention to drop.
    if job.data_dropped_at is not None and job.dataset_id is None:
        out.warnings = [
            *out.warnings,
            f"training data dropped on {job.data_dropped_at.isoformat(timespec='seconds')} "
            "after the retention period; the model and loss history remain",
        ]
    if alive is not None and _waits_for_device(job) and job.required_device not in alive:
        out.warnings = [
            *out.warnings,
            f"waiting for a worker with {job.required_device}: none is alive; "
            "the job stays queued until one starts",
        ]
    return out


def _waits_for_device(job: Job) -> bool:
    return job.status == JobStatus.QUEUED and job.required_device != "auto"


def live_kinds_if_needed(db: Database, settings: Settings, jobs: Sequence[Job]) -> set[str] | None:
    """Ask the fleet registry only when some job waits for a particular device."""
    if not any(_waits_for_device(job) for job in jobs):
        return None
    return fleet.live_device_kinds(db, settings.lease_seconds)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        404: {"model": ErrorOut, "description": "No dataset with the dataset_id"},
        422: {"model": ErrorOut, "description": "The job spec is invalid"},
        415: {"model": ErrorOut, "description": "The body is not JSON"},
        429: {
            "model": ErrorOut,
            "description": "This API key is at its quota of active jobs or stored bytes; "
            "Retry-After says when to try again",
        },
    },
    dependencies=[Depends(require_json)],
    openapi_extra=JOB_BODY,
)
async def submit_job(
    http: Request,
    response: Response,
    db: DatabaseDep,
    blob_store: BlobStoreDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    """Queue a training job. It is answered at once; poll `Location` for progress."""
    check_key(idempotency_key)
    body = await http.body()
    # Parsing, validation, encoding the data and the insert take seconds of CPU for a job of
    # several megabytes: in a worker thread, so they never stall the other requests.
    return await run_in_threadpool(
        queue_job, body, response, db, settings, principal, idempotency_key, blob_store
    )


def parse_job(body: bytes) -> JobCreate:
    """The body as a job request; a body that is not one raises the framework's validation
    error, so it is reported exactly as any other invalid body."""
    try:
        return JobCreate.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_body(exc) from None


def queue_job(
    body: bytes,
    response: Response,
    db: Database,
    settings: Settings,
    principal: Principal,
    idempotency_key: str | None,
    blob_store: BlobStore,
) -> JobOut:
    request = parse_job(body)
    # Digested before build_job fills in server settings (runtime ceiling, clipped batch).
    digest = request_digest(request) if idempotency_key is not None else None
    dataset = dataset_of(db, request, principal)
    job = build_job(request, settings, dataset)
    job.owner = principal.owner
    if idempotency_key is not None:
        job.idempotency_key = idempotency_key
        job.request_hash = digest
    try:
        stored, created = queue.enqueue_once(db, job, Quota.from_settings(settings), blob_store)
    except IntegrityError:
        # The dataset was deleted between the lookup and the insert, which its reference
        # then refused: the same answer as had it been gone from the start.
        if dataset is not None and not _dataset_exists(db, dataset.id):
            raise _no_dataset(dataset.id) from None
        raise
    if not created:
        if stored.request_hash != job.request_hash:
            raise InvalidInput(
                "this Idempotency-Key was already used with a different request body"
            )
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/jobs/{stored.id}"
    return job_out(stored, live_kinds_if_needed(db, settings, [stored]))


def dataset_of(db: Database, request: JobCreate, principal: Principal) -> DatasetRecord | None:
    """The dataset a job trains from (None for inline data); another key's is not found."""
    if request.dataset_id is None:
        return None
    try:
        return datasets.get(db, request.dataset_id, principal.owner_filter)
    except NotFound:
        raise _no_dataset(request.dataset_id) from None


def _no_dataset(dataset_id: str) -> NotFound:
    return NotFound(
        f"no dataset with id {dataset_id} (dataset_id); upload one with POST /datasets, or "
        "list yours with GET /datasets"
    )


def _dataset_exists(db: Database, dataset_id: str) -> bool:
    with db.read() as session:
        return session.get(DatasetRecord, dataset_id) is not None


@router.get("")
def list_jobs(
    db: DatabaseDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    status: StatusFilter = None,
    sweep_id: Annotated[
        str | None, Query(max_length=36, description="Only this sweep's trials.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> JobList:
    """Jobs, newest first."""
    conditions = [Job.status == status] if status else []
    if sweep_id is not None:
        conditions.append(Job.sweep_id == sweep_id)
    if principal.owner_filter is not None:
        conditions.append(Job.owner == principal.owner_filter)
    with db.read() as session:
        total = session.scalar(select(func.count()).select_from(Job).where(*conditions)) or 0
        jobs = session.scalars(
            select(Job)
            .where(*conditions)
            .order_by(Job.created_at.desc(), Job.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
    alive = live_kinds_if_needed(db, settings, jobs)
    return JobList(jobs=[job_out(j, alive) for j in jobs], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", responses=NOT_FOUND)
def get_job(job_id: str, db: DatabaseDep, settings: SettingsDep, principal: PrincipalDep) -> JobOut:
    with db.read() as session:
        job = job_or_404(session, job_id, principal)
    return job_out(job, live_kinds_if_needed(db, settings, [job]))


@router.get(
    "/{job_id}/data",
    responses={
        **NOT_FOUND,
        409: {"model": ErrorOut, "description": "The job's training data is no longer kept"},
    },
)
def get_job_data(
    job_id: str,
    db: DatabaseDep,
    blob_store: BlobStoreDep,
    principal: PrincipalDep,
    max_rows: Annotated[
        int, Query(ge=1, le=MAX_SAMPLE_ROWS, description="At most this many rows, drawn evenly.")
    ] = DEFAULT_SAMPLE_ROWS,
) -> TrainingDataSample:
    """A sample of the job's training data (all of it when small): what the dashboard draws
    beside a model's prediction. Raw values, as submitted; classification targets as labels."""
    with db.read() as session:
        job_or_404(session, job_id, principal)
    try:
        dataset = load_job_dataset(db, blob_store, job_id)
    except CorruptBlob as exc:
        raise Conflict(
            f"the training data of job {job_id} is no longer kept (dropped after the retention "
            "period, or its dataset was deleted)"
        ) from exc
    rows = sample_rows(len(dataset.x), max_rows)
    y = dataset.y[rows]
    return TrainingDataSample(
        x=dataset.x[rows].tolist(),
        y=[dataset.classes[i] for i in y.tolist()] if dataset.classes is not None else y.tolist(),
        feature_names=dataset.feature_names,
        n_rows=len(dataset.x),
    )


@router.post(
    "/{job_id}/cancel",
    responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "The job already ended"}},
)
def cancel_job(job_id: str, db: DatabaseDep, principal: PrincipalDep) -> JobOut:
    """A queued job is cancelled at once; a running one stops at its next batch."""
    return job_out(queue.request_cancel(db, job_id, owner=principal.owner_filter))
