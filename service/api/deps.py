"""Per-request dependencies, as Annotated aliases the routes declare."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.api.auth import Principal
from service.api.gate import authorization_header, principal_of
from service.api.state import ApiState
from service.config import Settings
from service.errors import NotFound, UnsupportedMediaType
from service.inference import PredictorCache
from service.storage.blobs import BlobStore
from service.storage.db import Database
from service.storage.models import Job


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


# Async on purpose: FastAPI runs sync dependencies in a thread pool, a hop the hot path avoids.
async def get_state(request: Request) -> ApiState:
    return api_state(request)


async def get_settings(request: Request) -> Settings:
    return api_state(request).settings


async def get_database(request: Request) -> Database:
    return api_state(request).db


async def get_blob_store(request: Request) -> BlobStore:
    return api_state(request).blob_store


async def get_predictors(request: Request) -> PredictorCache:
    return api_state(request).predictors


async def get_principal(request: Request) -> Principal:
    """The caller, as the gate found it; authenticated here only when the app runs without
    the gate in front (tests that build the bare FastAPI app)."""
    return principal_of(request.scope) or api_state(request).keys.authenticate(
        authorization_header(request.scope)
    )


StateDep = Annotated[ApiState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
DatabaseDep = Annotated[Database, Depends(get_database)]
BlobStoreDep = Annotated[BlobStore, Depends(get_blob_store)]
PredictorsDep = Annotated[PredictorCache, Depends(get_predictors)]


async def require_json(request: Request) -> None:
    check_json_content_type(request)


def check_json_content_type(request: Request) -> None:
    """Without this, a form-encoded body reads as 'not an object', which misleads."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            "send the body as JSON with Content-Type: application/json "
            f"(got {media_type or 'none'})"
        )


def job_or_404(session: Session, job_id: str, principal: Principal) -> Job:
    """The job if it exists and this caller may see it; another owner's job is a plain 404."""
    job = session.get(Job, job_id)
    if job is None or not principal.can_see(job.owner):
        raise NotFound(f"no job or model with id {job_id}")
    return job
