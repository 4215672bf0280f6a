"""Turn a validated job request into a queued job row: limits, resolved settings, stored data.

A job's data comes inline (encoded into the row) or from an uploaded dataset, which the job
only references: everything that needs the data is then checked from the dataset's stored
summary (rows, columns, the target's kind, range and classes), without reading its bytes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from service.config import Settings
from service.errors import InvalidInput
from service.job_size import JobSize
from service.schemas import JobCreate, JobSpec, validation_split_problem
from service.storage.models import DatasetRecord, Job
from service.storage.store import Dataset, encode_dataset
from service.training.network import NetworkConfig

# float32 is what the network trains in: larger magnitudes would become infinities.
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class DataShape:
    """What the checks of a job need to know of its data, inline or uploaded."""

    n_rows: int
    n_features: int
    n_target_columns: int  # regression's outputs; 1 for classification
    classes: list[Any] | None  # classification's distinct labels
    target_range: tuple[float, float]  # regression's lowest and highest target

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.classes is not None else self.n_target_columns


def build_job(request: JobCreate, settings: Settings, dataset: DatasetRecord | None = None) -> Job:
    """Check limits and build the job row; raises InvalidInput before storing anything. A
    request with a dataset_id needs that dataset's row (looked up, and owner-checked, by the
    caller)."""
    if request.data is None:
        if dataset is None or dataset.id != request.dataset_id:
            raise AssertionError("a job from a dataset is built with that dataset's row")
        shape = _dataset_shape(request, dataset)
        _check_limits(request, settings, shape)
        return _job_row(request, settings, shape, data=b"", dataset_id=dataset.id)
    shape = _inline_shape(request)
    _check_limits(request, settings, shape)  # before the data is converted: it may be huge
    inline = _to_dataset(request)
    if inline.classes is None:
        shape = replace(shape, target_range=(float(inline.y.min()), float(inline.y.max())))
    return _job_row(request, settings, shape, data=encode_dataset(inline), dataset_id=None)


def build_trials(
    requests: list[JobCreate], settings: Settings, dataset: DatasetRecord | None = None
) -> list[Job]:
    """A sweep's trials as job rows: build_job for each, with the data (shared by every trial)
    converted and encoded once. Raises InvalidInput before storing anything."""
    first = requests[0]
    if first.data is None:
        return [build_job(request, settings, dataset) for request in requests]
    shape = _inline_shape(first)
    for request in requests:
        _check_limits(request, settings, shape)
    inline = _to_dataset(first)
    if inline.classes is None:
        shape = replace(shape, target_range=(float(inline.y.min()), float(inline.y.max())))
    data = encode_dataset(inline)
    return [_job_row(request, settings, shape, data=data, dataset_id=None) for request in requests]


def _job_row(
    request: JobCreate, settings: Settings, shape: DataShape, *, data: bytes,
    dataset_id: str | None,
) -> Job:  # fmt: skip
    if request.training.max_runtime_seconds is None:
        request.training.max_runtime_seconds = settings.max_runtime_seconds
    warnings = _clip_batch_size(request, shape.n_rows)
    warnings += _output_range_warnings(request, shape)
    spec = JobSpec(
        task=request.task,
        model=request.model,
        training=request.training,
        preprocessing=request.preprocessing,
        resources=request.resources,
    )
    return Job(
        id=str(uuid.uuid4()),
        name=request.name,
        task=request.task,
        spec=spec.model_dump(mode="json"),
        data=data,
        dataset_id=dataset_id,
        n_rows=shape.n_rows,
        n_features=shape.n_features,
        n_outputs=shape.n_outputs,
        warnings=warnings,
        epochs=request.training.epochs,
        required_device=request.resources.device,
        epoch=0,
        attempts=0,
        max_attempts=settings.max_attempts,
        cancel_requested=False,
    )


def _inline_shape(request: JobCreate) -> DataShape:
    """The shape of inline data, read from the request as sent (the range comes later)."""
    assert request.data is not None, "inline data"
    x, y = request.data.x, request.data.y
    classification = request.task == "classification"
    return DataShape(
        n_rows=len(x),
        n_features=len(x[0]),
        n_target_columns=1 if classification or not isinstance(y[0], list) else len(y[0]),
        classes=sorted(set(y)) if classification else None,
        target_range=(0.0, 0.0),
    )


def _dataset_shape(request: JobCreate, dataset: DatasetRecord) -> DataShape:
    """The dataset's summary, checked against the job's task; InvalidInput naming the
    mismatch (the inline path's checks, made from the summary)."""
    targets = [column for column in dataset.columns if column["role"] == "target"]
    where = f"dataset {dataset.id}'s target {dataset.target!r}"
    labels = any(column["kind"] == "label" for column in targets)
    if request.task == "classification":
        if len(targets) != 1:
            raise InvalidInput(
                f"classification needs one target column; {where} has {len(targets)}"
            )
        if dataset.classes is None:
            raise InvalidInput(
                f"classification needs integer or text labels; {where} holds numbers that are "
                "not integers, or too many distinct ones: train a regression instead"
            )
        if len(dataset.classes) < 2:
            raise InvalidInput(
                f"classification needs at least two distinct labels; {where} holds one"
            )
    elif labels:
        raise InvalidInput(
            f"regression needs a numeric target; {where} holds labels: use task 'classification'"
        )
    problem = validation_split_problem(dataset.n_rows, request.training.validation_fraction)
    if problem:
        raise InvalidInput(problem)
    low = min((column["min"] for column in targets if column["min"] is not None), default=0.0)
    high = max((column["max"] for column in targets if column["max"] is not None), default=0.0)
    return DataShape(
        n_rows=dataset.n_rows,
        n_features=len(dataset.feature_names),
        n_target_columns=1 if request.task == "classification" else len(targets),
        classes=dataset.classes if request.task == "classification" else None,
        target_range=(float(low), float(high)),
    )


def _check_limits(request: JobCreate, settings: Settings, shape: DataShape) -> None:
    n_rows, n_features = shape.n_rows, shape.n_features
    problems = []
    if n_rows > settings.max_rows:
        problems.append(f"{n_rows} rows exceed the limit of {settings.max_rows}")
    if n_features > settings.max_features:
        problems.append(f"{n_features} features exceed the limit of {settings.max_features}")
    if n_rows * n_features > settings.max_cells:
        problems.append(f"{n_rows}x{n_features} values exceed the limit of {settings.max_cells}")
    layers = request.model.hidden_layers
    if len(layers) > settings.max_layers:
        problems.append(f"{len(layers)} hidden layers exceed the limit of {settings.max_layers}")
    if layers and max(layers) > settings.max_layer_width:
        problems.append(
            f"a layer of width {max(layers)} exceeds the limit of {settings.max_layer_width}"
        )
    runtime = request.training.max_runtime_seconds
    if runtime is not None and runtime > settings.max_runtime_seconds:
        problems.append(
            f"max_runtime_seconds {runtime:g} exceeds the limit of {settings.max_runtime_seconds:g}"
        )
    if request.training.epochs > settings.max_epochs:
        problems.append(
            f"{request.training.epochs} epochs exceed the limit of {settings.max_epochs}"
        )
    if shape.classes is not None:
        problems += _label_problems(shape.classes, settings)
    if not problems:  # the estimate assumes the shapes above are sane
        problems += _size_of(request, shape).problems(settings)
    if problems:
        raise InvalidInput("; ".join(problems))


def _label_problems(classes: list[Any], settings: Settings) -> list[str]:
    """Labels come back in every prediction: their count and length bound each answer."""
    if len(classes) > settings.max_classes:
        return [f"{len(classes)} classes exceed the limit of {settings.max_classes}"]
    lengths = [len(label) for label in classes if isinstance(label, str)]
    problems = []
    if lengths and max(lengths) > settings.max_label_chars:
        problems.append(
            f"a class label of {max(lengths)} characters exceeds the limit of "
            f"{settings.max_label_chars}"
        )
    if sum(lengths) > settings.max_label_total_chars:
        problems.append(
            f"the class labels take {sum(lengths)} characters together, above the limit of "
            f"{settings.max_label_total_chars}"
        )
    return problems


def _size_of(request: JobCreate, shape: DataShape) -> JobSize:
    n_rows = shape.n_rows
    network = NetworkConfig(
        n_inputs=shape.n_features,
        hidden_layers=tuple(request.model.hidden_layers),
        n_outputs=shape.n_outputs,
        activation=request.model.activation,
        output_activation=request.model.output_activation,
    )
    training = request.training
    return JobSize.estimate(
        network,
        n_rows=n_rows,
        n_target_columns=shape.n_target_columns,
        batch_size=min(training.batch_size, n_rows),
        n_validation_rows=round(n_rows * training.validation_fraction),
        optimizer=training.optimizer,
        momentum=training.momentum,
    )


def _to_dataset(request: JobCreate) -> Dataset:
    assert request.data is not None, "inline data"
    x = np.asarray(request.data.x, dtype=np.float64)
    if request.task == "classification":
        labels: list[Any] = list(request.data.y)
        classes = sorted(set(labels))
        index = {label: i for i, label in enumerate(classes)}
        y = np.asarray([index[label] for label in labels], dtype=np.int64)
        _check_float32_range(x, "x")
        return Dataset(x=x, y=y, classes=classes, feature_names=request.data.feature_names)
    y = np.asarray(request.data.y, dtype=np.float64)
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    _check_float32_range(x, "x")
    _check_float32_range(y, "y")
    return Dataset(x=x, y=y, feature_names=request.data.feature_names)


def _check_float32_range(values: np.ndarray, name: str) -> None:
    if values.size and float(np.abs(values).max()) > FLOAT32_MAX:
        raise InvalidInput(f"values in {name} must lie within ±{FLOAT32_MAX:.3g} (float32)")


def _clip_batch_size(request: JobCreate, n_rows: int) -> list[str]:
    n_train = n_rows - round(n_rows * request.training.validation_fraction)
    if request.training.batch_size <= n_train:
        return []
    asked = request.training.batch_size
    request.training.batch_size = n_train
    return [f"batch_size {asked} is larger than the {n_train} training rows; clipped to {n_train}"]


def _output_range_warnings(request: JobCreate, shape: DataShape) -> list[str]:
    bounded = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}
    activation = request.model.output_activation
    if request.task != "regression" or activation not in bounded:
        return []
    if request.preprocessing.targets == "standard":
        return [
            f"targets are standard-scaled but the {activation} output can only reach "
            f"{bounded[activation]}; consider output_activation null"
        ]
    low, high = bounded[activation]
    if shape.target_range[0] < low or shape.target_range[1] > high:
        return [
            f"some targets lie outside ({low:g}, {high:g}), which a {activation} output "
            "cannot reach; consider output_activation null"
        ]
    return []
