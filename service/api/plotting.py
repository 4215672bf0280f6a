"""What the plot routes draw, gathered from storage: a job's thinned loss history, and a model
with its training data. Blocking I/O and rendering: the routes call these from the threadpool."""

from __future__ import annotations

import logging

import numpy as np

from service.api.auth import Principal
from service.api.deps import job_or_404
from service.api.state import ApiState
from service.datasets.training_data import load_job_dataset
from service.errors import InvalidInput, ModelNotReady
from service.inference import Predictor, predict
from service.loss_curve import read_loss_page
from service.plots import ImageFormat, LossCurve, Surface, render_loss, render_surface
from service.storage.blobs import CorruptBlob
from service.storage.models import JobStatus, Model
from service.storage.store import Dataset

log = logging.getLogger("service.api")

# The most epochs a loss plot draws: a long history is thinned to its shape first.
PLOT_LOSS_POINTS = 2000
SURFACE_FEATURES = (1, 2)


def loss_image(state: ApiState, principal: Principal, model_id: str, fmt: ImageFormat) -> bytes:
    with state.db.read() as session:
        job = job_or_404(session, model_id, principal)
        name = job.name or f"model {model_id[:8]}"
        title = f"{name}: loss ({job.status}, epoch {job.epoch} of {job.epochs})"
        page = read_loss_page(session, model_id, 1, None, PLOT_LOSS_POINTS)
    rows = page.rows
    validated = any(r.val_loss is not None for r in rows)
    curve = LossCurve(
        title=title,
        epochs=[r.epoch for r in rows],
        train_loss=[r.train_loss for r in rows],
        val_loss=[r.val_loss for r in rows] if validated else None,
    )
    return render_loss(curve, fmt)


def surface_image(state: ApiState, principal: Principal, model_id: str) -> bytes:
    with state.db.read() as session:
        job = job_or_404(session, model_id, principal)
        name, n_features, status = job.name, job.n_features, job.status
        model = session.get(Model, model_id)
        scalers = None if model is None else model.scalers
    if n_features not in SURFACE_FEATURES:
        raise InvalidInput(
            f"surface plots show models of 1 or 2 inputs; model {model_id} takes {n_features}"
        )
    if status != JobStatus.SUCCEEDED or scalers is None:
        raise ModelNotReady(model_id, status)
    predictor = state.predictors.get(model_id, principal.can_see)
    dataset = training_data(state, model_id)
    data_y = None if dataset is None else dataset.y
    if dataset is not None and predictor.classes is None:
        data_y = dataset.y.reshape(len(dataset.y), -1)
    surface = Surface(
        title=f"{name or 'model ' + model_id[:8]}: prediction over the training range",
        input_min=np.asarray(scalers["input_min"], dtype=float),
        input_max=np.asarray(scalers["input_max"], dtype=float),
        feature_names=predictor.feature_names or [f"x{i + 1}" for i in range(n_features)],
        output_names=[f"y{i + 1}" for i in range(predictor.n_outputs)]
        if predictor.n_outputs > 1
        else ["y"],
        classes=predictor.classes,
        n_parameters=predictor.n_parameters,
        predict=lambda rows: outputs(predictor, rows),
        data_x=None if dataset is None else dataset.x,
        data_y=data_y,
    )
    return render_surface(surface)


def outputs(predictor: Predictor, rows: np.ndarray) -> np.ndarray:
    """Regression: the predicted values; classification: the class probabilities."""
    prediction = predict(predictor, rows)
    values = prediction.probabilities if predictor.classes is not None else prediction.values
    assert values is not None
    return values


def training_data(state: ApiState, job_id: str) -> Dataset | None:
    """The job's training data, or None once retention dropped it (the plot says so)."""
    try:
        return load_job_dataset(state.db, state.blob_store, job_id)
    except CorruptBlob as exc:
        log.info("surface plot of model %s without its training data: %s", job_id, exc)
        return None
