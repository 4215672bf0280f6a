"""What the service answers, as typed, immutable values.

Each type reads the service's JSON leniently: fields a newer service adds are kept in `raw`
and ignored otherwise, so an older client keeps working against a newer service.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import numpy as np

from service.client._exceptions import JobFailed

T = TypeVar("T")
Json = Mapping[str, Any]

# The statuses a job never leaves.
FINISHED = frozenset({"succeeded", "failed", "cancelled"})


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Job:
    """A training job. Its id is also the id of the model it trains."""

    id: str
    status: str  # queued, running, succeeded, failed or cancelled
    name: str | None = None
    task: str = "regression"
    epoch: int = 0
    epochs: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    best_epoch: int | None = None
    attempts: int = 0
    error: str | None = None
    warnings: tuple[str, ...] = ()
    n_rows: int = 0
    n_features: int = 0
    device: str | None = None
    dataset_id: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    spec: Json = field(default_factory=dict, repr=False, compare=False)
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Json) -> Job:
        return cls(
            id=str(body["id"]),
            status=str(body["status"]),
            name=body.get("name"),
            task=str(body.get("task", "regression")),
            epoch=int(body.get("epoch") or 0),
            epochs=int(body.get("epochs") or 0),
            train_loss=_float(body.get("train_loss")),
            val_loss=_float(body.get("val_loss")),
            best_epoch=body.get("best_epoch"),
            attempts=int(body.get("attempts") or 0),
            error=body.get("error"),
            warnings=tuple(body.get("warnings") or ()),
            n_rows=int(body.get("n_rows") or 0),
            n_features=int(body.get("n_features") or 0),
            device=body.get("device"),
            dataset_id=body.get("dataset_id"),
            created_at=_time(body.get("created_at")),
            started_at=_time(body.get("started_at")),
            finished_at=_time(body.get("finished_at")),
            spec=body.get("spec") or {},
            raw=body,
        )

    @property
    def finished(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def raise_for_status(self) -> Job:
        """This job, if it has not failed or been cancelled; else raise JobFailed."""
        if self.status in ("failed", "cancelled"):
            raise JobFailed(self)
        return self


@dataclass(frozen=True)
class Trial:
    """One trial of a sweep: an ordinary job (its id is the job's and its model's id) with the
    parameter values the sweep gave it, e.g. {"training.learning_rate": 0.01}."""

    id: str
    status: str  # queued, running, succeeded, failed or cancelled
    params: Json = field(default_factory=dict, hash=False)
    epoch: int = 0
    epochs: int = 0
    train_loss: float | None = None  # the last epoch's (final once the trial ended)
    val_loss: float | None = None
    error: str | None = None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Json) -> Trial:
        return cls(
            id=str(body["id"]),
            status=str(body["status"]),
            params=dict(body.get("params") or {}),
            epoch=int(body.get("epoch") or 0),
            epochs=int(body.get("epochs") or 0),
            train_loss=_float(body.get("train_loss")),
            val_loss=_float(body.get("val_loss")),
            error=body.get("error"),
            raw=body,
        )

    @property
    def finished(self) -> bool:
        """Whether the trial has ended (succeeded, failed or cancelled)."""
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


@dataclass(frozen=True)
class Sweep:
    """A search over hyperparameters: one trial (one job) per combination or draw.

    `status` is queued, running, then once every trial ended: succeeded (some trial did),
    failed (none did) or cancelled (the sweep was). `best` is the succeeded trial with the
    lowest final validation loss (training loss without a validation split: `best_by` says
    which); None until one succeeded. `trials` is empty in a listing: get_sweep has them."""

    id: str
    status: str
    name: str | None = None
    n_trials: int = 0
    counts: Mapping[str, int] = field(default_factory=dict, hash=False)
    best: Trial | None = None
    best_by: str | None = None  # "val_loss" or "train_loss"
    trials: tuple[Trial, ...] = ()
    created_at: datetime | None = None
    search: Json = field(default_factory=dict, repr=False, compare=False)
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Json) -> Sweep:
        best = body.get("best")
        return cls(
            id=str(body["id"]),
            status=str(body["status"]),
            name=body.get("name"),
            n_trials=int(body.get("n_trials") or 0),
            counts={str(k): int(v) for k, v in (body.get("counts") or {}).items()},
            best=Trial.from_json(best) if best is not None else None,
            best_by=body.get("best_by"),
            trials=tuple(Trial.from_json(t) for t in body.get("trials") or ()),
            created_at=_time(body.get("created_at")),
            search=body.get("search") or {},
            raw=body,
        )

    @property
    def finished(self) -> bool:
        """Whether every trial has ended (the sweep succeeded, failed or was cancelled)."""
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        """Whether the sweep ended with at least one trial succeeded."""
        return self.status == "succeeded"


@dataclass(frozen=True)
class Model:
    """A trained model: its network, scalers, feature count and, for a classifier, classes."""

    id: str
    task: str
    n_features: int
    n_outputs: int
    name: str | None = None
    classes: tuple[Any, ...] | None = None
    feature_names: tuple[str, ...] | None = None
    created_at: datetime | None = None
    architecture: Json = field(default_factory=dict, repr=False, compare=False)
    scalers: Json = field(default_factory=dict, repr=False, compare=False)
    metrics: Json = field(default_factory=dict, repr=False, compare=False)
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Json) -> Model:
        classes = body.get("classes")
        names = body.get("feature_names")
        return cls(
            id=str(body["id"]),
            task=str(body.get("task", "regression")),
            n_features=int(body["n_features"]),
            n_outputs=int(body.get("n_outputs") or 0),
            name=body.get("name"),
            classes=tuple(classes) if classes is not None else None,
            feature_names=tuple(names) if names is not None else None,
            created_at=_time(body.get("created_at")),
            architecture=body.get("architecture") or {},
            scalers=body.get("scalers") or {},
            metrics=body.get("metrics") or {},
            raw=body,
        )


@dataclass(frozen=True)
class LossHistory:
    """The loss of every epoch so far, oldest first (the mean batch loss of each epoch)."""

    id: str
    status: str
    epochs: tuple[int, ...]
    train_loss: tuple[float, ...]
    # Per epoch, when the job holds out a validation split; else None.
    val_loss: tuple[float | None, ...] | None
    seconds: tuple[float, ...]

    @classmethod
    def from_pages(cls, pages: Sequence[Json]) -> LossHistory:
        """One history from the pages GET /models/{id}/loss answered, in order."""
        last = pages[-1]
        has_val = any(page.get("val_loss") is not None for page in pages)
        val: list[float | None] = []
        for page in pages:
            page_val = page.get("val_loss")
            val.extend(page_val if page_val is not None else [None] * len(page["epochs"]))
        return cls(
            id=str(last["id"]),
            status=str(last["status"]),
            epochs=tuple(int(e) for page in pages for e in page["epochs"]),
            train_loss=tuple(float(v) for page in pages for v in page["train_loss"]),
            val_loss=tuple(_float(v) for v in val) if has_val else None,
            seconds=tuple(float(v) for page in pages for v in page.get("seconds") or ()),
        )

    def __len__(self) -> int:
        return len(self.epochs)


@dataclass(frozen=True, eq=False)
class Prediction:
    """A model's answer for rows of inputs.

    Regression: `predictions` is a float array of shape (rows, outputs) and `probabilities`
    is None. Classification: `predictions` holds one label per row and `probabilities` has
    shape (rows, classes), its columns in the order of the model's `classes`."""

    predictions: np.ndarray
    probabilities: np.ndarray | None = None


@dataclass(frozen=True)
class DatasetColumn:
    """One column of an uploaded dataset, summarised when it was stored."""

    name: str
    role: str  # "feature" or "target"
    kind: str  # "number" (finite numbers) or "label" (text: a classification target)
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    missing: int = 0

    @classmethod
    def from_json(cls, body: Json) -> DatasetColumn:
        return cls(
            name=str(body["name"]),
            role=str(body.get("role", "feature")),
            kind=str(body.get("kind", "")),
            min=_float(body.get("min")),
            max=_float(body.get("max")),
            mean=_float(body.get("mean")),
            std=_float(body.get("std")),
            missing=int(body.get("missing") or 0),
        )


@dataclass(frozen=True)
class Dataset:
    """Training data stored on the service, which any number of jobs can train on."""

    id: str
    n_rows: int
    n_columns: int
    name: str | None = None
    target: str | None = None
    feature_names: tuple[str, ...] = ()
    columns: tuple[DatasetColumn, ...] = ()
    size_bytes: int = 0
    created_at: datetime | None = None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Json) -> Dataset:
        return cls(
            id=str(body["id"]),
            n_rows=int(body.get("n_rows") or 0),
            n_columns=int(body.get("n_columns") or 0),
            name=body.get("name"),
            target=body.get("target"),
            feature_names=tuple(body.get("feature_names") or ()),
            columns=tuple(DatasetColumn.from_json(c) for c in body.get("columns") or ()),
            size_bytes=int(body.get("size_bytes") or 0),
            created_at=_time(body.get("created_at")),
            raw=body,
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing, newest first; `total` counts every item on the service."""

    items: tuple[T, ...]
    total: int
    limit: int
    offset: int

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def next_offset(self) -> int | None:
        """The offset of the next page, or None on the last one."""
        end = self.offset + len(self.items)
        return end if end < self.total else None
