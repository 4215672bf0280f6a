"""Stored models become ready predictors, cached per process; one predict function serves all.

Every protocol adapter (native JSON today, others later) calls `predict`, so scaling, feature
checks and output decoding live in one place.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from sqlalchemy import select

from service.db import Database
from service.errors import InvalidInput, ModelNotReady, ModelUnusable, NotFound
from service.models import Job, Model
from service.store import CorruptBlob, decode_weights
from service.training.data import Scaler
from service.training.network import NetworkConfig, build_network


@dataclass(frozen=True)
class Predictor:
    model_id: str
    task: str
    n_features: int
    network: nn.Module
    input_scaler: Scaler | None
    target_scaler: Scaler | None
    classes: list[Any] | None


@dataclass(frozen=True)
class Prediction:
    """Regression: `values` rows. Classification: `labels` and class `probabilities`."""

    values: np.ndarray | None = None
    labels: list[Any] | None = None
    probabilities: np.ndarray | None = None


def predict(predictor: Predictor, inputs: np.ndarray) -> Prediction:
    """Raw inputs in: the stored input scaler is applied and target scaling undone."""
    if inputs.ndim != 2 or inputs.shape[1] != predictor.n_features:
        width = inputs.shape[1] if inputs.ndim == 2 else "?"
        raise InvalidInput(
            f"model {predictor.model_id} takes {predictor.n_features} features per row, got {width}"
        )
    scaled = predictor.input_scaler.transform(inputs) if predictor.input_scaler else inputs
    with torch.inference_mode():
        output = predictor.network(torch.from_numpy(np.asarray(scaled, dtype=np.float32)))
        if predictor.classes is not None:
            probabilities = torch.softmax(output, dim=1).numpy().astype(np.float64)
            labels = [predictor.classes[i] for i in probabilities.argmax(axis=1).tolist()]
            return Prediction(labels=labels, probabilities=probabilities)
        values = output.numpy().astype(np.float64)
    if predictor.target_scaler is not None:
        values = predictor.target_scaler.inverse_transform(values)
    return Prediction(values=values)


def build_predictor(model: Model, weights: bytes) -> Predictor:
    network = build_network(NetworkConfig.from_dict(model.architecture))
    try:
        network.load_state_dict(decode_weights(weights))
    except (CorruptBlob, RuntimeError, KeyError) as exc:
        raise ModelUnusable(
            f"the stored weights of model {model.id} cannot be read: {exc}"
        ) from exc
    network.eval()
    return Predictor(
        model_id=model.id,
        task=model.task,
        n_features=model.n_features,
        network=network,
        input_scaler=Scaler.from_json(model.scalers.get("inputs")),
        target_scaler=Scaler.from_json(model.scalers.get("targets")),
        classes=model.classes,
    )


def load_predictor(db: Database, model_id: str) -> Predictor:
    with db.read() as session:
        row = session.execute(
            select(Model, Model.weights).where(Model.id == model_id)
        ).one_or_none()
        if row is None:
            status = session.scalar(select(Job.status).where(Job.id == model_id))
            if status is None:
                raise NotFound(f"no model with id {model_id}")
            raise ModelNotReady(model_id, status)
        model, weights = row
    return build_predictor(model, weights)


class PredictorCache:
    """A bounded LRU of ready predictors. Safe because stored models never change."""

    def __init__(self, db: Database, capacity: int) -> None:
        self._db = db
        self._capacity = capacity
        self._entries: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_id: str) -> Predictor:
        with self._lock:
            predictor = self._entries.get(model_id)
            if predictor is not None:
                self._entries.move_to_end(model_id)
                return predictor
        predictor = load_predictor(self._db, model_id)
        with self._lock:
            self._entries[model_id] = predictor
            self._entries.move_to_end(model_id)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return predictor

    def evict(self, model_id: str) -> None:
        with self._lock:
            self._entries.pop(model_id, None)
