"""Turn a validated job request into a queued job row: limits, resolved settings, stored data."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from service.config import Settings
from service.errors import InvalidInput
from service.job_size import JobSize
from service.models import Job
from service.schemas import JobCreate, JobSpec
from service.store import Dataset, encode_dataset
from service.training.network import NetworkConfig

# float32 is what the network trains in: larger magnitudes would become infinities.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def build_job(request: JobCreate, settings: Settings) -> Job:
    """Check limits and build the job row; raises InvalidInput before storing anything."""
    n_rows, n_features = len(request.data.x), len(request.data.x[0])
    _check_limits(request, settings, n_rows, n_features)
    dataset = _to_dataset(request)
    if request.training.max_runtime_seconds is None:
        request.training.max_runtime_seconds = settings.max_runtime_seconds
    warnings = _clip_batch_size(request, n_rows)
    warnings += _output_range_warnings(request, dataset)
    spec = JobSpec(
        task=request.task,
        model=request.model,
        training=request.training,
        preprocessing=request.preprocessing,
        resources=request.resources,
    )
    n_outputs = len(dataset.classes) if dataset.classes is not None else int(dataset.y.shape[1])
    return Job(
        id=str(uuid.uuid4()),
        name=request.name,
        task=request.task,
        spec=spec.model_dump(mode="json"),
        data=encode_dataset(dataset),
        n_rows=n_rows,
        n_features=n_features,
        n_outputs=n_outputs,
        warnings=warnings,
        epochs=request.training.epochs,
        required_device=request.resources.device,
        epoch=0,
        attempts=0,
        max_attempts=settings.max_attempts,
        cancel_requested=False,
    )


def _check_limits(request: JobCreate, settings: Settings, n_rows: int, n_features: int) -> None:
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
    if request.task == "classification":
        problems += _label_problems(request, settings)
    if not problems:  # the estimate assumes the shapes above are sane
        problems += _size_of(request, n_rows, n_features).problems(settings)
    if problems:
        raise InvalidInput("; ".join(problems))


def _label_problems(request: JobCreate, settings: Settings) -> list[str]:
    """Labels come back in every prediction: their count and length bound each answer."""
    classes = set(request.data.y)
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


def _size_of(request: JobCreate, n_rows: int, n_features: int) -> JobSize:
    first_y = request.data.y[0]
    if request.task == "classification":
        n_outputs, n_target_columns = len(set(request.data.y)), 1
    else:
        n_outputs = len(first_y) if isinstance(first_y, list) else 1
        n_target_columns = n_outputs
    network = NetworkConfig(
        n_inputs=n_features,
        hidden_layers=tuple(request.model.hidden_layers),
        n_outputs=n_outputs,
        activation=request.model.activation,
        output_activation=request.model.output_activation,
    )
    training = request.training
    return JobSize.estimate(
        network,
        n_rows=n_rows,
        n_target_columns=n_target_columns,
        batch_size=min(training.batch_size, n_rows),
        n_validation_rows=round(n_rows * training.validation_fraction),
        optimizer=training.optimizer,
        momentum=training.momentum,
    )


def _to_dataset(request: JobCreate) -> Dataset:
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


def _output_range_warnings(request: JobCreate, dataset: Dataset) -> list[str]:
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
    if float(dataset.y.min()) < low or float(dataset.y.max()) > high:
        return [
            f"some targets lie outside ({low:g}, {high:g}), which a {activation} output "
            "cannot reach; consider output_activation null"
        ]
    return []
