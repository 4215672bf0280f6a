"""Trained models: inspect, delete, predict, and the loss history of the job behind each."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from service.api.deps import (
    BlobStoreDep,
    DatabaseDep,
    PredictorsDep,
    PrincipalDep,
    StateDep,
    job_or_404,
)
from service.api.error_handlers import CLIENT_CLOSED_REQUEST
from service.api.json_io import json_response, read_rows
from service.api.model_order import NEWEST_FIRST, SortOrder, model_order
from service.api.openapi import schema_ref
from service.api.plotting import loss_image, surface_image
from service.api.prediction import is_small, ready_predictor, run_prediction
from service.errors import ModelNotReady
from service.inference import prediction_body
from service.loss_curve import LossPage, read_loss_page
from service.plots import MEDIA_TYPES
from service.schemas import (
    MAX_OFFSET,
    ErrorOut,
    LossHistoryOut,
    ModelList,
    ModelOut,
    PredictRequest,
    PredictResponse,
)
from service.storage import queue
from service.storage.models import Job, Model

log = logging.getLogger("service.api")
router = APIRouter(prefix="/models", tags=["models"])
# /loss pages: the default and the most epochs one answer holds (about 60 bytes each).
DEFAULT_LOSS_PAGE = 10_000
MAX_LOSS_PAGE = 100_000
# Two points (a low and a high) per stretch of epochs, for train and validation loss.
MIN_LOSS_POINTS = 4

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No model or job with this id"}
}
NOT_READY: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "The job has not succeeded (yet)"}
}


def model_out(model: Model, name: str | None) -> ModelOut:
    """The model's columns, with the name of the job that trained it."""
    fields = {field: getattr(model, field) for field in ModelOut.model_fields if field != "name"}
    return ModelOut.model_validate({**fields, "name": name})


@router.get("")
def list_models(
    db: DatabaseDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    sort: SortOrder = NEWEST_FIRST,
) -> ModelList:
    """Trained models, newest first, or ordered by a metric (`?sort=-val_r2`)."""
    order = model_order(sort)
    mine = [Job.owner == principal.owner_filter] if principal.owner_filter is not None else []
    with db.read() as session:
        total = (
            session.scalar(
                select(func.count()).select_from(Model).join(Job, Job.id == Model.id).where(*mine)
            )
            or 0
        )
        rows = session.execute(
            select(Model, Job.name)
            .join(Job, Job.id == Model.id)
            .where(*mine)
            .order_by(*order)
            .limit(limit)
            .offset(offset)
        ).all()
        return ModelList(
            models=[model_out(m, name) for m, name in rows], total=total, limit=limit, offset=offset
        )


@router.get("/{model_id}", responses={**NOT_FOUND, **NOT_READY})
def get_model(model_id: str, db: DatabaseDep, principal: PrincipalDep) -> ModelOut:
    """Architecture, scalers, feature count and training metrics."""
    with db.read() as session:
        job = job_or_404(session, model_id, principal)
        model = session.get(Model, model_id)
        if model is None:
            raise ModelNotReady(model_id, job.status)
        return model_out(model, job.name)


@router.delete(
    "/{model_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "The job is still active"}},
)
def delete_model(
    model_id: str,
    db: DatabaseDep,
    blob_store: BlobStoreDep,
    predictors: PredictorsDep,
    principal: PrincipalDep,
) -> Response:
    """Delete a model with its job and loss history. An active job must be cancelled first.

    Every API process stops serving it within DELETION_POLL_SECONDS; this one at once."""
    queue.delete_job(db, model_id, owner=principal.owner_filter, blob_store=blob_store)
    predictors.forget(model_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# The route reads its body itself (service/api/json_io.py, faster than a model); the examples
# beside the reference are the ones /docs offers to run.
PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    **schema_ref(PredictRequest),
                    "examples": PredictRequest.model_json_schema()["examples"],
                }
            }
        },
    }
}


@router.post(
    "/{model_id}/predict",
    response_model=PredictResponse,
    openapi_extra=PREDICT_BODY,
    responses={
        **NOT_FOUND,
        **NOT_READY,
        422: {"model": ErrorOut, "description": "Wrong feature count or invalid inputs"},
        415: {"model": ErrorOut, "description": "The body is not JSON"},
    },
)
async def predict_model(
    model_id: str, request: Request, state: StateDep, principal: PrincipalDep
) -> Response:
    """Predict from raw inputs: the stored input scaler is applied, target scaling undone.

    Body: `{"inputs": [[x1, x2, ...], ...]}`. Requests for cached models are usually answered
    by `PredictFastPath` before they get here; this route loads models (in a worker thread),
    runs big forward passes off the event loop in chunks (stopping at the deadline or when the
    client leaves), and reports every error.
    """
    inputs = await read_rows(request)
    predictor = await ready_predictor(state, principal, model_id)
    prediction = await run_prediction(request, state, predictor, inputs)
    if prediction is None:
        log.info("predict for model %s: the client left; its work stopped", model_id)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    if is_small(predictor, inputs):
        return json_response(prediction_body(prediction))
    return await run_in_threadpool(json_response, prediction_body(prediction))


@router.get("/{model_id}/loss", responses=NOT_FOUND)
def get_loss(
    model_id: str,
    db: DatabaseDep,
    principal: PrincipalDep,
    from_epoch: Annotated[
        int, Query(ge=1, le=MAX_OFFSET, description="The first epoch to return.")
    ] = 1,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_LOSS_PAGE,
            description=f"At most this many epochs; `next_from_epoch` continues from there. "
            f"Default {DEFAULT_LOSS_PAGE}, or with `max_points` every epoch from `from_epoch` on.",
        ),
    ] = None,
    max_points: Annotated[
        int | None,
        Query(
            ge=MIN_LOSS_POINTS,
            le=MAX_LOSS_PAGE,
            description="Thin the epochs asked for (from `from_epoch`, `limit` of them) to at "
            "most this many, keeping the lowest and highest loss of each stretch of epochs.",
        ),
    ] = None,
) -> LossHistoryOut:
    """The loss of each epoch so far, oldest first; it grows while the job runs. A long history
    comes in pages: follow `next_from_epoch` until it is null. Or ask for its shape in one
    answer: `?max_points=1000` returns at most 1000 real epochs, the extremes of each stretch,
    however long the history (thinned in the database)."""
    if max_points is None and limit is None:
        limit = DEFAULT_LOSS_PAGE
    with db.read() as session:
        job_status = job_or_404(session, model_id, principal).status
        page = read_loss_page(session, model_id, from_epoch, limit, max_points)
    return loss_history_out(model_id, job_status, page)


def loss_history_out(job_id: str, job_status: str, page: LossPage) -> LossHistoryOut:
    rows = page.rows
    has_val = any(r.val_loss is not None for r in rows)
    return LossHistoryOut(
        id=job_id,
        status=job_status,
        epochs=[r.epoch for r in rows],
        train_loss=[r.train_loss for r in rows],
        val_loss=[r.val_loss for r in rows] if has_val else None,
        seconds=[r.seconds for r in rows],
        next_from_epoch=page.next_from_epoch,
    )


def image_responses(media_type: str, what: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": what,
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
        },
        **NOT_FOUND,
        501: {"model": ErrorOut, "description": "The server lacks matplotlib (the plots extra)"},
    }


LOSS_PLOT = "Train and validation loss per epoch, log scale; drawn while the job runs too"


@router.get(
    "/{model_id}/loss.png",
    response_class=Response,
    responses=image_responses("image/png", LOSS_PLOT),
)
def plot_loss_png(model_id: str, state: StateDep, principal: PrincipalDep) -> Response:
    """The loss curve as a PNG image (a long history is thinned to its shape first)."""
    return Response(loss_image(state, principal, model_id, "png"), media_type=MEDIA_TYPES["png"])


@router.get(
    "/{model_id}/loss.svg",
    response_class=Response,
    responses=image_responses("image/svg+xml", LOSS_PLOT),
)
def plot_loss_svg(model_id: str, state: StateDep, principal: PrincipalDep) -> Response:
    """The loss curve as an SVG image (a long history is thinned to its shape first)."""
    return Response(loss_image(state, principal, model_id, "svg"), media_type=MEDIA_TYPES["svg"])


@router.get(
    "/{model_id}/surface.png",
    response_class=Response,
    responses={
        **image_responses("image/png", "The model's prediction over its training range"),
        **NOT_READY,
        422: {"model": ErrorOut, "description": "The model takes more than 2 inputs"},
    },
)
def plot_surface_png(model_id: str, state: StateDep, principal: PrincipalDep) -> Response:
    """A model of 1 input: the training data as points and the prediction as a line over the
    trained input range. Of 2 inputs: the training data beside a map of the prediction over the
    range of the training inputs. 409 until the job has succeeded."""
    return Response(surface_image(state, principal, model_id), media_type=MEDIA_TYPES["png"])
