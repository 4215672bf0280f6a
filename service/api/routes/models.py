"""Trained models: inspect, delete, predict, and the loss history of the job behind each."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Response, status
from sqlalchemy import delete, func, select

from service.api.deps import DatabaseDep, PredictorsDep, require_json
from service.errors import Conflict, ModelNotReady, NotFound
from service.inference import predict
from service.models import Job, JobStatus, LossRecord, Model
from service.schemas import (
    ErrorOut,
    LossHistoryOut,
    ModelList,
    ModelOut,
    PredictRequest,
    PredictResponse,
)

router = APIRouter(prefix="/models", tags=["models"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No model or job with this id"}
}
NOT_READY: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "The job has not succeeded (yet)"}
}


def model_out(model: Model, name: str | None) -> ModelOut:
    return ModelOut(
        id=model.id,
        name=name,
        task=model.task,  # type: ignore[arg-type]
        created_at=model.created_at,
        architecture=model.architecture,
        n_features=model.n_features,
        n_outputs=model.n_outputs,
        classes=model.classes,
        scalers=model.scalers,
        metrics=model.metrics,
    )


@router.get("")
def list_models(
    db: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ModelList:
    """Trained models, newest first."""
    with db.read() as session:
        total = session.scalar(select(func.count()).select_from(Model)) or 0
        rows = session.execute(
            select(Model, Job.name)
            .join(Job, Job.id == Model.id)
            .order_by(Model.created_at.desc(), Model.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
        return ModelList(
            models=[model_out(m, name) for m, name in rows], total=total, limit=limit, offset=offset
        )


@router.get("/{model_id}", responses={**NOT_FOUND, **NOT_READY})
def get_model(model_id: str, db: DatabaseDep) -> ModelOut:
    """Architecture, scalers, feature count and training metrics."""
    with db.read() as session:
        row = session.execute(
            select(Model, Job.name).join(Job, Job.id == Model.id).where(Model.id == model_id)
        ).one_or_none()
        if row is not None:
            return model_out(*row)
        job_status = session.scalar(select(Job.status).where(Job.id == model_id))
    if job_status is None:
        raise NotFound(f"no model with id {model_id}")
    raise ModelNotReady(model_id, job_status)


@router.delete(
    "/{model_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NOT_FOUND, 409: {"model": ErrorOut, "description": "The job is still active"}},
)
def delete_model(model_id: str, db: DatabaseDep, predictors: PredictorsDep) -> Response:
    """Delete a model with its job and loss history. An active job must be cancelled first."""
    with db.write() as session:
        job_status = session.scalar(select(Job.status).where(Job.id == model_id))
        if job_status is None:
            raise NotFound(f"no model with id {model_id}")
        if job_status not in JobStatus.TERMINAL:
            raise Conflict(f"job {model_id} is {job_status}; cancel it before deleting it")
        session.execute(delete(LossRecord).where(LossRecord.job_id == model_id))
        session.execute(delete(Model).where(Model.id == model_id))
        session.execute(delete(Job).where(Job.id == model_id))
    predictors.evict(model_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{model_id}/predict",
    responses={
        **NOT_FOUND,
        **NOT_READY,
        422: {"model": ErrorOut, "description": "Wrong feature count or invalid inputs"},
        415: {"model": ErrorOut, "description": "The body is not JSON"},
    },
    dependencies=[Depends(require_json)],
)
def predict_model(
    model_id: str, request: PredictRequest, predictors: PredictorsDep
) -> PredictResponse:
    """Predict from raw inputs: the stored input scaler is applied, target scaling undone."""
    predictor = predictors.get(model_id)
    prediction = predict(predictor, np.asarray(request.inputs, dtype=np.float64))
    if prediction.labels is not None and prediction.probabilities is not None:
        return PredictResponse(
            predictions=prediction.labels, probabilities=prediction.probabilities.tolist()
        )
    assert prediction.values is not None
    return PredictResponse(predictions=prediction.values.tolist())


@router.get("/{model_id}/loss", responses=NOT_FOUND)
def get_loss(model_id: str, db: DatabaseDep) -> LossHistoryOut:
    """The loss of every epoch so far; it grows while the job runs."""
    with db.read() as session:
        job_status = session.scalar(select(Job.status).where(Job.id == model_id))
        if job_status is None:
            raise NotFound(f"no job or model with id {model_id}")
        rows = session.execute(
            select(LossRecord.epoch, LossRecord.train_loss, LossRecord.val_loss, LossRecord.seconds)
            .where(LossRecord.job_id == model_id)
            .order_by(LossRecord.epoch)
        ).all()
    has_val = any(r.val_loss is not None for r in rows)
    return LossHistoryOut(
        id=model_id,
        status=job_status,
        epochs=[r.epoch for r in rows],
        train_loss=[r.train_loss for r in rows],
        val_loss=[r.val_loss for r in rows] if has_val else None,
        seconds=[r.seconds for r in rows],
    )
