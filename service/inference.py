"""Stored models become ready predictors, cached per process; one predict function serves all.

Every protocol adapter (native JSON, the Open Inference Protocol, MLflow scoring) calls
`predict`, so scaling, feature checks and output decoding live in one place.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import orjson
import torch
import torch.nn as nn
from sqlalchemy import select

from service.config import Settings
from service.errors import InvalidInput, ModelNotReady, ModelUnusable, NotFound
from service.metrics_registry import CACHE_HIT, CACHE_MISS
from service.storage import queue
from service.storage.blobs import IN_DATABASE, BlobStore
from service.storage.db import Database
from service.storage.models import Job, Model
from service.storage.store import CorruptBlob, decode_weights
from service.training.data import Scaler
from service.training.network import NetworkConfig, build_network
from service.training.numpy_network import NumpyNetwork
from service.tuning import CHUNK_WORK

# The longest a float64 prints as JSON (sign, 17 digits, point, exponent) plus its comma.
FLOAT_JSON_BYTES = 25

Forward = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Predictor:
    model_id: str
    owner: str  # the job's owner: checked on every request, cached or not
    task: str
    n_features: int
    n_outputs: int
    n_parameters: int
    forward: Forward  # scaled float64 rows -> raw network outputs
    input_scaler: Scaler | None
    target_scaler: Scaler | None
    classes: list[Any] | None
    feature_names: list[str] | None = None  # the input columns' names, when training had them

    @property
    def n_bytes(self) -> int:
        """Memory the ready predictor holds: its weights, kept once by torch and once in the
        float32 copy the numpy forward pass uses."""
        return 2 * 4 * self.n_parameters

    @cached_property  # read on every request; frozen dataclasses allow it (no __slots__)
    def answer_bytes_per_row(self) -> int:
        """An upper bound on one row's share of the JSON answer (a float prints in at most
        24 characters; a label as JSON, escapes included)."""
        if self.classes is None:
            return FLOAT_JSON_BYTES * self.n_outputs + 4
        longest = max(len(orjson.dumps(label)) for label in self.classes)
        return longest + FLOAT_JSON_BYTES * len(self.classes) + 8


@dataclass(frozen=True)
class PredictLimits:
    """What one predict request may ask of the process (settings, service/config.py)."""

    max_work: int
    max_response_bytes: int
    timeout_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> PredictLimits:
        return cls(
            settings.max_predict_work,
            settings.max_response_bytes,
            settings.predict_timeout_seconds,
        )

    def check(self, predictor: Predictor, n_rows: int) -> None:
        """Refuse, before any work, a request whose forward pass or answer is too big."""
        if n_rows * predictor.n_parameters > self.max_work:
            raise InvalidInput(
                f"{n_rows} rows x {predictor.n_parameters} weights is more work than one request "
                f"may ask ({self.max_work} rows x weights); send at most "
                f"{max(1, self.max_work // predictor.n_parameters)} rows per request"
            )
        answer = n_rows * predictor.answer_bytes_per_row
        if answer > self.max_response_bytes:
            raise InvalidInput(
                f"the answer to {n_rows} rows could take {answer} bytes, above the limit of "
                f"{self.max_response_bytes}; send at most "
                f"{max(1, self.max_response_bytes // predictor.answer_bytes_per_row)} rows "
                "per request"
            )


@dataclass(frozen=True)
class Prediction:
    """Regression: `values` rows. Classification: `labels` and class `probabilities`."""

    values: np.ndarray | None = None
    labels: list[Any] | None = None
    probabilities: np.ndarray | None = None

    @staticmethod
    def join(parts: list[Prediction]) -> Prediction:
        """The predictions of consecutive row ranges, as one."""
        first = parts[0]
        if len(parts) == 1:
            return first
        if first.labels is not None:
            return Prediction(
                labels=[label for part in parts for label in part.labels or []],
                probabilities=np.concatenate(
                    [p.probabilities for p in parts if p.probabilities is not None]
                ),
            )
        return Prediction(values=np.concatenate([p.values for p in parts if p.values is not None]))

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


def row_chunks(predictor: Predictor, inputs: np.ndarray) -> list[np.ndarray]:
    """The rows in chunks of about CHUNK_WORK rows x weights: a large prediction runs a chunk
    at a time, so its deadline and its client leaving are noticed between chunks."""
    rows_per_chunk = max(1, CHUNK_WORK // predictor.n_parameters)
    return [
        inputs[start : start + rows_per_chunk] for start in range(0, len(inputs), rows_per_chunk)
    ]


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
        n_outputs=model.n_outputs,
        n_parameters=config.n_parameters,
        forward=forward,
        input_scaler=Scaler.from_json(model.scalers.get("inputs")),
        target_scaler=Scaler.from_json(model.scalers.get("targets")),
        classes=model.classes,
        feature_names=model.feature_names,
    )


@dataclass(frozen=True)
class StoredModel:
    model: Model
    weights: bytes
    owner: str  # the job's owner


def load_stored_model(
    db: Database,
    model_id: str,
    can_see: Callable[[str], bool] = lambda owner: True,
    blob_store: BlobStore = IN_DATABASE,
) -> StoredModel:
    """Read a model and its weights (from the blob store, when they live there); another
    owner's model is reported as not found."""
    with db.read() as session:
        job = session.execute(select(Job.status, Job.owner).where(Job.id == model_id)).one_or_none()
        if job is None or not can_see(job.owner):
            raise no_such_model(model_id)
        row = session.execute(select(Model, Model.weights).where(Model.id == model_id)).first()
        if row is None:
            raise ModelNotReady(model_id, job.status)
        model, inline = row
    try:  # outside the session: a large file is read without holding a connection
        weights = blob_store.fetch(model.weights_ref, inline)
    except CorruptBlob as exc:
        raise ModelUnusable(
            f"the stored weights of model {model_id} cannot be read: {exc}"
        ) from exc
    return StoredModel(model, weights, job.owner)


def load_predictor(
    db: Database,
    model_id: str,
    can_see: Callable[[str], bool] = lambda owner: True,
    blob_store: BlobStore = IN_DATABASE,
) -> Predictor:
    stored = load_stored_model(db, model_id, can_see, blob_store)
    return build_predictor(stored.model, stored.weights, stored.owner)


def no_such_model(model_id: str) -> NotFound:
    """The one answer for an id that does not exist and for another owner's: same status, same
    words, reached by the same database read, so neither tells the other apart."""
    return NotFound(f"no job or model with id {model_id}")


class PredictorCache:
    """An LRU of ready predictors, bounded by count and by the bytes their weights hold. Safe
    because stored models never change; only a deletion ends one, and `refresh` (every
    DELETION_POLL_SECONDS) learns of those from the database, whichever process deleted it."""

    def __init__(
        self,
        db: Database,
        capacity: int,
        capacity_bytes: int | None = None,
        blob_store: BlobStore = IN_DATABASE,
    ) -> None:
        self._db = db
        self._blob_store = blob_store
        self._capacity = capacity
        self._capacity_bytes = capacity_bytes
        self._bytes = 0
        self._entries: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()
        # Models deleted while this process runs are never cached again, even by a load that
        # read the model just before its deletion and finishes after this process heard of it.
        self._deleted: set[str] = set()
        self._last_deletion = 0
        # Counted as plain integers on the hot path and added to the Prometheus counters now
        # and then (publish_counts): a Prometheus increment costs the fast path a microsecond.
        self._hits = 0
        self._misses = 0

    def cached(self, model_id: str) -> Predictor | None:
        """The predictor if this process has it already: no I/O, safe on the event loop. A find
        counts as a cache hit; a miss is counted by `get`, when it goes to storage."""
        with self._lock:
            predictor = self._entries.get(model_id)
            if predictor is not None:
                self._entries.move_to_end(model_id)
                self._hits += 1
            return predictor

    def get(self, model_id: str, can_see: Callable[[str], bool] = lambda owner: True) -> Predictor:
        """The predictor, loading it from the database on a miss (blocking I/O). A cached
        model the caller may not see is looked up like an unknown one (no_such_model)."""
        predictor = self.cached(model_id)
        if predictor is not None and can_see(predictor.owner):
            return predictor
        with self._lock:
            self._misses += 1
        predictor = load_predictor(self._db, model_id, can_see, self._blob_store)
        with self._lock:
            if model_id in self._deleted or model_id in self._entries:
                return predictor  # deleted meanwhile, or another request cached it already
            if self._capacity_bytes is not None and predictor.n_bytes > self._capacity_bytes:
                return predictor  # it alone would empty the cache: serve it uncached
            self._entries[model_id] = predictor
            self._bytes += predictor.n_bytes
            while len(self._entries) > self._capacity or (
                self._capacity_bytes is not None and self._bytes > self._capacity_bytes
            ):
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.n_bytes
        return predictor

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def forget(self, model_id: str) -> None:
        """The model was deleted: drop it, and never cache it again."""
        with self._lock:
            dropped = self._entries.pop(model_id, None)
            if dropped is not None:
                self._bytes -= dropped.n_bytes
            self._deleted.add(model_id)

    def publish_counts(self) -> None:
        """Add the hits and misses counted since the last call to the process's metrics."""
        with self._lock:
            hits, misses, self._hits, self._misses = self._hits, self._misses, 0, 0
        if hits:
            CACHE_HIT.inc(hits)
        if misses:
            CACHE_MISS.inc(misses)

    def refresh(self) -> None:
        """Forget the models deleted through any process since the last refresh (blocking I/O),
        and publish the cache's counts: every API process runs this several times a second."""
        self.publish_counts()
        for seq, model_id in queue.deletions_after(self._db, self._last_deletion):
            self.forget(model_id)
            self._last_deletion = seq
