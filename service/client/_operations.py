"""What each client method asks the service, free of any I/O.

An operation is a generator: it yields the requests to send (Call) and the pauses to take
(Pause), receives each answer's JSON, and returns the method's result. Client and AsyncClient
run the same operations, one with blocking I/O and one with coroutines, so paging, polling,
chunking and parsing are written once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, TypedDict, TypeVar
from urllib.parse import quote

import numpy as np
from numpy.typing import ArrayLike

from service.client import _arrays
from service.client._exceptions import WaitTimeout
from service.client._results import (
    Dataset,
    Job,
    LossHistory,
    Model,
    Page,
    Prediction,
    Sweep,
    Trial,
)

T = TypeVar("T")
R = TypeVar("R", Job, Sweep)


@dataclass(frozen=True)
class Call:
    """One HTTP request. `retry`: sending it twice does no harm (a read, a prediction, a
    submit carrying an Idempotency-Key), so a lost answer or a 503 may be retried."""

    method: str
    path: str
    params: Mapping[str, str | int] | None = None
    json: Any = None
    content: bytes | None = None
    upload: Path | None = None  # a file streamed as the body
    content_type: str | None = None  # of `content` or `upload`
    headers: Mapping[str, str] = field(default_factory=dict)
    retry: bool = False


@dataclass(frozen=True)
class Pause:
    seconds: float


Step = Call | Pause
# Each Call is answered with its JSON body (None for an empty one); each Pause with None.
Operation = Generator[Step, Any, T]

ProgressCallback = Callable[[Job], object]
SweepProgressCallback = Callable[[Sweep], object]
# A grid's values for one setting: a list, a tuple or a 1-D array (np.logspace(-3, -1, 3)).
GridValues = Sequence[Any] | np.ndarray
# Polling starts fast (a small job ends within a second) and slows down to `poll_interval`.
FIRST_POLL_SECONDS = 0.05
POLL_GROWTH = 1.5


def _id(value: str | Job | Trial | Model | Dataset | Sweep) -> str:
    """An id from an id or from the object that has it (a Job's id is its model's id, and a
    Trial's is its job's)."""
    return quote(value if isinstance(value, str) else value.id, safe="")


def fetch(call: Call) -> Operation[Any]:
    body = yield call
    return body


class JobSettings(TypedDict, total=False):
    """A job's settings as submit() takes them (each one optional), for the methods that
    build a job body too: submit_sweep's base job."""

    dataset_id: str | Dataset | None
    task: str
    feature_names: Sequence[str] | None
    hidden_layers: Sequence[int] | None
    activation: str | None
    output_activation: str | None
    optimizer: str | None
    learning_rate: float | None
    momentum: float | None
    weight_decay: float | None
    batch_size: int | None
    epochs: int | None
    loss: str | None
    validation_fraction: float | None
    early_stopping_patience: int | None
    seed: int | None
    max_runtime_seconds: float | None
    input_scaling: str | None
    target_scaling: str | None
    device: str | None


def job_body(
    x: ArrayLike | None,
    y: ArrayLike | None,
    *,
    dataset_id: str | Dataset | None = None,
    task: str = "regression",
    name: str | None = None,
    feature_names: Sequence[str] | None = None,
    hidden_layers: Sequence[int] | None = None,
    activation: str | None = None,
    output_activation: str | None = None,
    optimizer: str | None = None,
    learning_rate: float | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    batch_size: int | None = None,
    epochs: int | None = None,
    loss: str | None = None,
    validation_fraction: float | None = None,
    early_stopping_patience: int | None = None,
    seed: int | None = None,
    max_runtime_seconds: float | None = None,
    input_scaling: str | None = None,
    target_scaling: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """The POST /jobs body. Settings left None are left out: the service's defaults (the seed
    notebook's) apply, and the service stays the one place that knows them."""
    body: dict[str, Any] = {"task": task}
    if name is not None:
        body["name"] = name
    if isinstance(dataset_id, Dataset):
        dataset_id = dataset_id.id
    if dataset_id is not None:
        if x is not None or y is not None:
            raise ValueError("pass either x and y or a dataset_id, not both")
        body["dataset_id"] = dataset_id
    elif x is None or y is None:
        raise ValueError("submit needs training data: x and y, or a dataset_id")
    else:
        rows = _arrays.feature_rows(x)
        targets: list[Any] = (
            _arrays.class_labels(y, len(rows))
            if task == "classification"
            else _arrays.regression_targets(y, len(rows))
        )
        data: dict[str, Any] = {"x": rows.tolist(), "y": targets}
        if feature_names is not None:
            data["feature_names"] = [str(n) for n in feature_names]
        body["data"] = data
    sections: dict[str, dict[str, Any]] = {
        "model": {
            "hidden_layers": list(hidden_layers) if hidden_layers is not None else None,
            "activation": activation,
            "output_activation": output_activation,
        },
        "training": {
            "optimizer": optimizer,
            "learning_rate": learning_rate,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "batch_size": batch_size,
            "epochs": epochs,
            "loss": loss,
            "validation_fraction": validation_fraction,
            "early_stopping_patience": early_stopping_patience,
            "seed": seed,
            "max_runtime_seconds": max_runtime_seconds,
        },
        "preprocessing": {"inputs": input_scaling, "targets": target_scaling},
        "resources": {"device": device},
    }
    for section, settings in sections.items():
        chosen = {key: value for key, value in settings.items() if value is not None}
        if chosen:
            body[section] = chosen
    return body


def submit(body: Mapping[str, Any], idempotency_key: str | None) -> Operation[Job]:
    # A key of our own makes the submit safe to resend when its answer is lost.
    key = idempotency_key if idempotency_key is not None else uuid.uuid4().hex
    answer = yield from fetch(
        Call("POST", "/jobs", json=body, headers={"Idempotency-Key": key}, retry=True)
    )
    return Job.from_json(answer)


def get_job(job: str | Job | Trial) -> Operation[Job]:
    answer = yield from fetch(Call("GET", f"/jobs/{_id(job)}", retry=True))
    return Job.from_json(answer)


def list_jobs(status: str | None, limit: int, offset: int) -> Operation[Page[Job]]:
    params: dict[str, str | int] = {"limit": limit, "offset": offset}
    if status is not None:
        params["status"] = status
    answer = yield from fetch(Call("GET", "/jobs", params=params, retry=True))
    return Page(
        items=tuple(Job.from_json(j) for j in answer["jobs"]),
        total=int(answer["total"]),
        limit=int(answer["limit"]),
        offset=int(answer["offset"]),
    )


def cancel(job: str | Job | Trial) -> Operation[Job]:
    answer = yield from fetch(Call("POST", f"/jobs/{_id(job)}/cancel"))
    return Job.from_json(answer)


def wait(
    job: str | Job | Trial,
    timeout: float | None,
    progress: ProgressCallback | None,
    poll_interval: float,
) -> Operation[Job]:
    return (yield from _poll(lambda: get_job(job), timeout, progress, poll_interval))


def _poll(
    read: Callable[[], Operation[R]],
    timeout: float | None,
    progress: Callable[[R], object] | None,
    poll_interval: float,
) -> Operation[R]:
    """Read until what is read has finished; WaitTimeout with the last state after `timeout`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = min(FIRST_POLL_SECONDS, poll_interval)
    while True:
        current = yield from read()
        if progress is not None:
            progress(current)
        if current.finished:
            return current
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(current, timeout or 0.0)
            pause = min(pause, left)
        yield Pause(pause)
        pause = min(pause * POLL_GROWTH, poll_interval)


def get_model(model: str | Job | Trial | Model) -> Operation[Model]:
    answer = yield from fetch(Call("GET", f"/models/{_id(model)}", retry=True))
    return Model.from_json(answer)


def list_models(limit: int, offset: int) -> Operation[Page[Model]]:
    params: dict[str, str | int] = {"limit": limit, "offset": offset}
    answer = yield from fetch(Call("GET", "/models", params=params, retry=True))
    return Page(
        items=tuple(Model.from_json(m) for m in answer["models"]),
        total=int(answer["total"]),
        limit=int(answer["limit"]),
        offset=int(answer["offset"]),
    )


def delete(model: str | Job | Trial | Model) -> Operation[None]:
    yield from fetch(Call("DELETE", f"/models/{_id(model)}"))


def predict(model: str | Job | Trial | Model, x: ArrayLike) -> Operation[Prediction]:
    rows = _arrays.feature_rows(x)
    path = f"/models/{_id(model)}/predict"
    predictions: list[np.ndarray] = []
    probabilities: list[np.ndarray] = []
    for chunk in _arrays.chunks(rows):
        answer = yield from fetch(Call("POST", path, json={"inputs": chunk.tolist()}, retry=True))
        predictions.append(_arrays.predictions_array(answer["predictions"]))
        if answer.get("probabilities") is not None:
            probabilities.append(np.asarray(answer["probabilities"], dtype=np.float64))
    return Prediction(
        predictions=np.concatenate(predictions),
        probabilities=np.concatenate(probabilities) if probabilities else None,
    )


def loss(model: str | Job | Trial | Model) -> Operation[LossHistory]:
    path = f"/models/{_id(model)}/loss"
    pages: list[Any] = []
    from_epoch: int | None = 1
    while from_epoch is not None:
        page = yield from fetch(Call("GET", path, params={"from_epoch": from_epoch}, retry=True))
        pages.append(page)
        from_epoch = page.get("next_from_epoch")
    return LossHistory.from_pages(pages)


def upload_dataset(
    source: str | PathLike[str] | ArrayLike,
    *,
    target: str | None,
    y: ArrayLike | None,
    name: str | None,
    feature_names: Sequence[str] | None,
) -> Operation[Dataset]:
    params: dict[str, str | int] = {}
    if target is not None:
        params["target"] = target
    if name is not None:
        params["name"] = name
    if isinstance(source, str | PathLike):
        if y is not None or feature_names is not None:
            raise ValueError("a CSV file names its own columns: pass target=, not y= or names")
        if target is None:
            raise ValueError("a CSV upload needs target=: the name of the column to predict")
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        call = Call("POST", "/datasets", params=params, upload=path, content_type="text/csv")
    else:
        if y is None:
            raise ValueError("an array upload needs y=: the targets, one per row")
        archive = _arrays.npz_archive(source, y, feature_names)
        call = Call(
            "POST", "/datasets", params=params, content=archive, content_type="application/x-npz"
        )
    answer = yield from fetch(call)
    return Dataset.from_json(answer)


def get_dataset(dataset: str | Dataset) -> Operation[Dataset]:
    answer = yield from fetch(Call("GET", f"/datasets/{_id(dataset)}", retry=True))
    return Dataset.from_json(answer)


def list_datasets(limit: int, offset: int) -> Operation[Page[Dataset]]:
    params: dict[str, str | int] = {"limit": limit, "offset": offset}
    answer = yield from fetch(Call("GET", "/datasets", params=params, retry=True))
    return Page(
        items=tuple(Dataset.from_json(d) for d in answer["datasets"]),
        total=int(answer["total"]),
        limit=int(answer["limit"]),
        offset=int(answer["offset"]),
    )


def delete_dataset(dataset: str | Dataset) -> Operation[None]:
    yield from fetch(Call("DELETE", f"/datasets/{_id(dataset)}"))


def sweep_body(
    base: Mapping[str, Any],
    *,
    grid: Mapping[str, GridValues] | None,
    random: Mapping[str, Any] | None,
    name: str | None,
) -> dict[str, Any]:
    """The POST /sweeps body: the base job (a POST /jobs body) and exactly one search."""
    if (grid is None) == (random is None):
        raise ValueError("a sweep needs a grid= or a random= search, exactly one of the two")
    body: dict[str, Any] = {"base": dict(base)}
    if name is not None:
        body["name"] = name
    if grid is not None:
        body["grid"] = _plain(grid)
    else:
        body["random"] = _plain(random)
    return body


def _plain(value: Any) -> Any:
    """JSON's types from numpy's and tuples (np.logspace(-3, -1, 3) as a grid's values)."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def submit_sweep(body: Mapping[str, Any], idempotency_key: str | None) -> Operation[Sweep]:
    # A key of our own makes the submit safe to resend when its answer is lost.
    key = idempotency_key if idempotency_key is not None else uuid.uuid4().hex
    answer = yield from fetch(
        Call("POST", "/sweeps", json=body, headers={"Idempotency-Key": key}, retry=True)
    )
    return Sweep.from_json(answer)


def get_sweep(sweep: str | Sweep) -> Operation[Sweep]:
    answer = yield from fetch(Call("GET", f"/sweeps/{_id(sweep)}", retry=True))
    return Sweep.from_json(answer)


def list_sweeps(limit: int, offset: int) -> Operation[Page[Sweep]]:
    params: dict[str, str | int] = {"limit": limit, "offset": offset}
    answer = yield from fetch(Call("GET", "/sweeps", params=params, retry=True))
    return Page(
        items=tuple(Sweep.from_json(s) for s in answer["sweeps"]),
        total=int(answer["total"]),
        limit=int(answer["limit"]),
        offset=int(answer["offset"]),
    )


def wait_sweep(
    sweep: str | Sweep,
    timeout: float | None,
    progress: SweepProgressCallback | None,
    poll_interval: float,
) -> Operation[Sweep]:
    return (yield from _poll(lambda: get_sweep(sweep), timeout, progress, poll_interval))


def cancel_sweep(sweep: str | Sweep) -> Operation[Sweep]:
    answer = yield from fetch(Call("POST", f"/sweeps/{_id(sweep)}/cancel"))
    return Sweep.from_json(answer)


def delete_sweep(sweep: str | Sweep) -> Operation[None]:
    yield from fetch(Call("DELETE", f"/sweeps/{_id(sweep)}"))
