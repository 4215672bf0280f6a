"""Stored models become ready predictors, cached per process; one predict function serves all.

Every protocol adapter (native JSON today, others later) calls `predict`, so scaling, feature
checks and output decoding live in one place.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from sqlalchemy import select

from service import queue
from service.db import Database
from service.errors import InvalidInput, ModelNotReady, ModelUnusable, NotFound
from service.models import Job, Model
from service.store import CorruptBlob, decode_weights
from service.training.data import Scaler
from service.training.network import NetworkConfig, build_network
from service.training.numpy_network import NumpyNetwork

Forward = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Predictor:
    model_id: str
    owner: str  # the job's owner: checked on every request, cached or not
    task: str
    n_features: int
    n_parameters: int
    forward: Forward  # scaled float64 rows -> raw network outputs
    input_scaler: Scaler | None
    target_scaler: Scaler | None
    classes: list[Any] | None


@dataclass(frozen=True)
class Prediction:
    """Regression: `values` rows. Classification: `labels` and class `probabilities`."""

    values: np.ndarray | None = None
    labels: list[Any] | None = None
    probabilities: np.ndarray | None = None

    def slice(self, start: int, end: int) -> Prediction:
        """Rows start..end of a batched prediction."""
        return Prediction(
            values=None if self.values is None else self.values[start:end],
            labels=None if self.labels is None else self.labels[start:end],
            probabilities=None if self.probabilities is None else self.probabilities[start:end],
        )


def prediction_body(prediction: Prediction) -> dict[str, Any]:
    """The native protocol's answer: what the route and the fast path both send."""
    if prediction.labels is not None:
        return {"predictions": prediction.labels, "probabilities": prediction.probabilities}
    return {"predictions": prediction.values}


def check_features(predictor: Predictor, inputs: np.ndarray) -> None:
    if inputs.ndim != 2 or inputs.shape[1] != predictor.n_features:
        width = inputs.shape[1] if inputs.ndim == 2 else "?"
        raise InvalidInput(
            f"model {predictor.model_id} takes {predictor.n_features} features per row, got {width}"
        )


def predict(predictor: Predictor, inputs: np.ndarray) -> Prediction:
    """Raw inputs in: the stored input scaler is applied and target scaling undone."""
    check_features(predictor, inputs)
    scaled = predictor.input_scaler.transform(inputs) if predictor.input_scaler else inputs
    output = predictor.forward(scaled).astype(np.float64)
    if not np.isfinite(output).all():
        # JSON has no NaN or Infinity; and a client should hear why rather than get nulls.
        raise InvalidInput(
            "some inputs lie so far outside the training data that the model's output "
            "overflows; see the model's scalers (input_min, input_max) for the trained range"
        )
    if predictor.classes is not None:
        probabilities = softmax(output)
        labels = [predictor.classes[i] for i in probabilities.argmax(axis=1).tolist()]
        return Prediction(labels=labels, probabilities=probabilities)
    if predictor.target_scaler is not None:
        output = predictor.target_scaler.inverse_transform(output)
    return Prediction(values=output)


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return probabilities


def torch_forward(network: nn.Module) -> Forward:
    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            output: np.ndarray = network(torch.from_numpy(x.astype(np.float32))).numpy()
            return output

    return forward


def build_predictor(model: Model, weights: bytes, owner: str = "") -> Predictor:
    config = NetworkConfig.from_dict(model.architecture)
    network = build_network(config)
    try:
        network.load_state_dict(decode_weights(weights))
    except (CorruptBlob, RuntimeError, KeyError) as exc:
        raise ModelUnusable(
            f"the stored weights of model {model.id} cannot be read: {exc}"
        ) from exc
    network.eval()
    # numpy's per-call overhead is a few microseconds, torch's tens: it wins for small networks.
    forward: Forward = (
        NumpyNetwork(config, network.state_dict())
        if NumpyNetwork.supports(config)
        else torch_forward(network)
    )
    return Predictor(
        model_id=model.id,
        owner=owner,
        task=model.task,
        n_features=model.n_features,
        n_parameters=config.n_parameters,
        forward=forward,
        input_scaler=Scaler.from_json(model.scalers.get("inputs")),
        target_scaler=Scaler.from_json(model.scalers.get("targets")),
        classes=model.classes,
    )


def load_predictor(
    db: Database, model_id: str, can_see: Callable[[str], bool] = lambda owner: True
) -> Predictor:
    """Read a model from the database; another owner's model is reported as not found."""
    with db.read() as session:
        job = session.execute(select(Job.status, Job.owner).where(Job.id == model_id)).one_or_none()
        if job is None or not can_see(job.owner):
            raise NotFound(f"no model with id {model_id}")
        row = session.execute(select(Model, Model.weights).where(Model.id == model_id)).first()
        if row is None:
            raise ModelNotReady(model_id, job.status)
        model, weights = row
    return build_predictor(model, weights, job.owner)


class PredictorCache:
    """A bounded LRU of ready predictors. Safe because stored models never change; only a
    deletion ends one, and `refresh` (every DELETION_POLL_SECONDS) learns of those from the
    database, whichever process deleted the model."""

    def __init__(self, db: Database, capacity: int) -> None:
        self._db = db
        self._capacity = capacity
        self._entries: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()
        # Models deleted while this process runs are never cached again, even by a load that
        # read the model just before its deletion and finishes after this process heard of it.
        self._deleted: set[str] = set()
        self._last_deletion = 0

    def cached(self, model_id: str) -> Predictor | None:
        """The predictor if this process has it already: no I/O, safe on the event loop."""
        with self._lock:
            predictor = self._entries.get(model_id)
            if predictor is not None:
                self._entries.move_to_end(model_id)
            return predictor

    def get(self, model_id: str, can_see: Callable[[str], bool] = lambda owner: True) -> Predictor:
        """The predictor, loading it from the database on a miss (blocking I/O)."""
        predictor = self.cached(model_id)
        if predictor is not None:
            return predictor
        predictor = load_predictor(self._db, model_id, can_see)
        with self._lock:
            if model_id in self._deleted:
                return predictor  # this request began before the deletion; later ones will not
            self._entries[model_id] = predictor
            self._entries.move_to_end(model_id)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return predictor

    def forget(self, model_id: str) -> None:
        """The model was deleted: drop it, and never cache it again."""
        with self._lock:
            self._entries.pop(model_id, None)
            self._deleted.add(model_id)

    def refresh(self) -> None:
        """Forget the models deleted through any process since the last refresh (blocking I/O)."""
        for seq, model_id in queue.deletions_after(self._db, self._last_deletion):
            self.forget(model_id)
            self._last_deletion = seq
