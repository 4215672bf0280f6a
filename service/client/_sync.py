"""Client: the service's API as blocking method calls."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from os import PathLike
from types import TracebackType
from typing import IO, Any, TypeVar, Unpack

import httpx
from numpy.typing import ArrayLike

from service.client import _operations as ops
from service.client._operations import (
    Call,
    GridValues,
    JobSettings,
    Operation,
    Pause,
    ProgressCallback,
    SweepProgressCallback,
)
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
from service.client._transport import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    UPLOAD_CHUNK_BYTES,
    answer,
    default_headers,
    request_arguments,
    retry_wait,
    transport_error,
)

T = TypeVar("T")


class Client:
    """A connection to the training service.

        with Client("http://127.0.0.1:8000", api_key="...") as client:
            job = client.wait(client.submit(x, y, epochs=200)).raise_for_status()
            y_hat = client.predict(job, x_new).predictions

    `timeout` bounds each request (seconds). Requests that are safe to repeat (reads,
    predictions, submits: each carries an Idempotency-Key) are retried up to `retries` times
    when the answer is lost or the service is briefly unavailable (503). Errors the service
    answers raise an APIError subclass; see service.client's exception tree."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._retries = retries
        self._http = httpx.Client(
            base_url=base_url,
            headers=default_headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections this client holds."""
        self._http.close()

    # Jobs

    def submit(
        self,
        x: ArrayLike | None = None,
        y: ArrayLike | None = None,
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
        idempotency_key: str | None = None,
    ) -> Job:
        """Queue a training job on x (rows of features) and y, or on an uploaded dataset.

        `task` is "regression" (y: one float per row, or rows of floats) or "classification"
        (y: one int or str label per row). Every setting left None takes the service's
        default (the seed notebook's: hidden_layers [80], tanh, adam, learning_rate 0.01,
        batch_size 200, 400 epochs; output_activation "identity" for no output activation).
        Returns at once with the queued job; wait() follows it to the end."""
        body = ops.job_body(
            x,
            y,
            dataset_id=dataset_id,
            task=task,
            name=name,
            feature_names=feature_names,
            hidden_layers=hidden_layers,
            activation=activation,
            output_activation=output_activation,
            optimizer=optimizer,
            learning_rate=learning_rate,
            momentum=momentum,
            weight_decay=weight_decay,
            batch_size=batch_size,
            epochs=epochs,
            loss=loss,
            validation_fraction=validation_fraction,
            early_stopping_patience=early_stopping_patience,
            seed=seed,
            max_runtime_seconds=max_runtime_seconds,
            input_scaling=input_scaling,
            target_scaling=target_scaling,
            device=device,
        )
        return self._run(ops.submit(body, idempotency_key))

    def submit_body(self, body: Mapping[str, Any], *, idempotency_key: str | None = None) -> Job:
        """Queue a job from a POST /jobs body as the API documents it (a dict)."""
        return self._run(ops.submit(body, idempotency_key))

    def get_job(self, job: str | Job | Trial) -> Job:
        """The job's current state: status, epoch of epochs, latest losses."""
        return self._run(ops.get_job(job))

    def list_jobs(
        self, *, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> Page[Job]:
        """Jobs, newest first; `status` keeps only the jobs in that status."""
        return self._run(ops.list_jobs(status, limit, offset))

    def wait(
        self,
        job: str | Job | Trial,
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
        *,
        poll_interval: float = 1.0,
    ) -> Job:
        """Poll the job until it ends, and return it (succeeded, failed or cancelled: call
        `.raise_for_status()` on it to turn failure into JobFailed).

        `progress(job)` is called after every poll (job.epoch, job.epochs, job.train_loss).
        Polls start 50 ms apart and slow down to `poll_interval` seconds. After `timeout`
        seconds WaitTimeout is raised; the job goes on training."""
        return self._run(ops.wait(job, timeout, progress, poll_interval))

    def cancel(self, job: str | Job | Trial) -> Job:
        """Cancel a job: a queued one at once, a running one at its next batch. Cancelling
        a job that already succeeded or failed raises Conflict."""
        return self._run(ops.cancel(job))

    # Models

    def get_model(self, model: str | Job | Trial | Model) -> Model:
        """The trained model: architecture, scalers, feature count, classes, metrics."""
        return self._run(ops.get_model(model))

    def list_models(self, *, limit: int = 50, offset: int = 0) -> Page[Model]:
        """Trained models, newest first."""
        return self._run(ops.list_models(limit, offset))

    def delete(self, model: str | Job | Trial | Model) -> None:
        """Delete a model with its job and loss history (an active job: cancel it first)."""
        self._run(ops.delete(model))

    def predict(self, model: str | Job | Trial | Model, x: ArrayLike) -> Prediction:
        """The model's predictions for x (rows of raw, unscaled features); many rows are
        sent in several requests. Raises ModelNotReady until the job has succeeded."""
        return self._run(ops.predict(model, x))

    def loss(self, model: str | Job | Trial | Model) -> LossHistory:
        """The loss history so far (every epoch, all pages); it grows while the job runs."""
        return self._run(ops.loss(model))

    # Datasets

    def upload_dataset(
        self,
        source: str | PathLike[str] | ArrayLike,
        *,
        target: str | None = None,
        y: ArrayLike | None = None,
        name: str | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> Dataset:
        """Store training data on the service, for any number of jobs to train on.

        `source` is the path of a CSV file with a header row (`target` names the column to
        predict; the file is streamed), or an array of features with `y` beside it (sent as
        an .npz archive, every float exact; `target` names y, "y" by default). Jobs then
        train on it with submit(dataset_id=...)."""
        return self._run(
            ops.upload_dataset(source, target=target, y=y, name=name, feature_names=feature_names)
        )

    def get_dataset(self, dataset: str | Dataset) -> Dataset:
        """The dataset's size, columns and their summary statistics."""
        return self._run(ops.get_dataset(dataset))

    def list_datasets(self, *, limit: int = 50, offset: int = 0) -> Page[Dataset]:
        """Uploaded datasets, newest first."""
        return self._run(ops.list_datasets(limit, offset))

    def delete_dataset(self, dataset: str | Dataset) -> None:
        """Delete a dataset (models trained on it stay)."""
        self._run(ops.delete_dataset(dataset))

    # Sweeps

    def submit_sweep(
        self,
        x: ArrayLike | None = None,
        y: ArrayLike | None = None,
        *,
        grid: Mapping[str, GridValues] | None = None,
        random: Mapping[str, Any] | None = None,
        name: str | None = None,
        idempotency_key: str | None = None,
        **settings: Unpack[JobSettings],
    ) -> Sweep:
        """Queue a sweep: one job per trial, each the base job (x, y or dataset_id and the
        settings, as submit() takes them) with the values the search gives it.

        `grid` maps a setting's path in the job body to its values, e.g.
        {"training.learning_rate": [0.003, 0.01, 0.03], "model.hidden_layers": [[8], [32]]}:
        every combination is one trial, the first path varying slowest. `random` is
        {"n": 16, "seed": 0, "space": {path: [choices...] or {"low": ..., "high": ...}}}:
        n trials drawn at random. Pass exactly one. `name` names the sweep (its trials are
        named after it and their values). A resent submit (a lost answer) returns the same sweep:
        it carries `idempotency_key`, or one of the client's own. Returns at once; wait_sweep()
        follows it to the end."""
        base = ops.job_body(x, y, **settings)
        body = ops.sweep_body(base, grid=grid, random=random, name=name)
        return self._run(ops.submit_sweep(body, idempotency_key))

    def submit_sweep_body(
        self, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Sweep:
        """Queue a sweep from a POST /sweeps body as the API documents it (a dict: "base",
        and "grid" or "random")."""
        return self._run(ops.submit_sweep(body, idempotency_key))

    def get_sweep(self, sweep: str | Sweep) -> Sweep:
        """The sweep's status, counts per status, every trial (params, status, final losses)
        and the best trial so far."""
        return self._run(ops.get_sweep(sweep))

    def list_sweeps(self, *, limit: int = 50, offset: int = 0) -> Page[Sweep]:
        """Sweeps, newest first, each with its status, counts and best trial (not its
        trials: get_sweep has them)."""
        return self._run(ops.list_sweeps(limit, offset))

    def wait_sweep(
        self,
        sweep: str | Sweep,
        timeout: float | None = None,
        progress: SweepProgressCallback | None = None,
        *,
        poll_interval: float = 1.0,
    ) -> Sweep:
        """Poll the sweep until every trial has ended, and return it (succeeded if some
        trial did, failed if none did, or cancelled); `.best` is the best trial.

        `progress(sweep)` is called after every poll (sweep.counts, sweep.best). Polls start
        50 ms apart and slow down to `poll_interval` seconds. After `timeout` seconds
        WaitTimeout is raised (its `sweep` is the last state); the trials go on training."""
        return self._run(ops.wait_sweep(sweep, timeout, progress, poll_interval))

    def cancel_sweep(self, sweep: str | Sweep) -> Sweep:
        """Cancel every trial still queued or running (queued ones at once, running ones at
        their next batch); trials that already ended keep their models."""
        return self._run(ops.cancel_sweep(sweep))

    def delete_sweep(self, sweep: str | Sweep) -> None:
        """Delete the sweep with every trial's job, model and loss history. Raises Conflict
        while a trial is queued or running: cancel_sweep() first."""
        self._run(ops.delete_sweep(sweep))

    # The one place this client does I/O.

    def _run(self, operation: Operation[T]) -> T:
        try:
            step = next(operation)
            while True:
                if isinstance(step, Pause):
                    time.sleep(step.seconds)
                    step = operation.send(None)
                else:
                    step = operation.send(self._send(step))
        except StopIteration as done:
            result: T = done.value
            return result

    def _send(self, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                response = self._request(call)
            except httpx.TransportError as error:
                wait = retry_wait(call, attempt, self._retries, error=error)
                if wait is None:
                    raise transport_error(call, self._http.base_url, error) from error
            else:
                if response.is_success:
                    return answer(response)
                wait = retry_wait(call, attempt, self._retries, response=response)
                if wait is None:
                    return answer(response)  # raises the error the service answered
            time.sleep(wait)
            attempt += 1

    def _request(self, call: Call) -> httpx.Response:
        arguments = request_arguments(call)
        if call.upload is None:
            return self._http.request(call.method, call.path, **arguments)
        with call.upload.open("rb") as file:
            return self._http.request(
                call.method, call.path, content=_file_chunks(file), **arguments
            )


def _file_chunks(file: IO[bytes]) -> Iterator[bytes]:
    while chunk := file.read(UPLOAD_CHUNK_BYTES):
        yield chunk
