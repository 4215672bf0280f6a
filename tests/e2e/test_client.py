"""The Python client against a real service (API keys on): every method (sweeps' too), and every
error it turns into an exception."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.client import (
    AsyncClient,
    Client,
    Conflict,
    InvalidInput,
    Job,
    JobFailed,
    ModelNotReady,
    NotFound,
    Sweep,
    Trial,
    Unauthorized,
    ValidationError,
    WaitTimeout,
)
from service.client import _operations as ops
from tests.support import ServiceProcess

pytestmark = pytest.mark.e2e

KEY, OTHER_KEY = "key-one", "key-two"
RNG = np.random.default_rng(0)
X = RNG.uniform(-2, 2, size=(64, 2))
Y = X[:, 0] * X[:, 1]
TINY: dict[str, Any] = {"hidden_layers": [8], "epochs": 5, "batch_size": 16}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    folder = tmp_path_factory.mktemp("service")
    process = ServiceProcess(
        f"sqlite:///{folder / 'service.db'}",
        log_path=folder / "service.log",
        env={"SERVICE_API_KEYS": f"{KEY},{OTHER_KEY}"},
    )
    process.start()
    yield process
    assert process.stop() == 0, process.log_tail()


@pytest.fixture(scope="module")
def client(service: ServiceProcess) -> Iterator[Client]:
    with Client(service.url, api_key=KEY) as client:
        yield client


@pytest.fixture(scope="module")
def trained(client: Client) -> Job:
    return client.wait(client.submit(X, Y, name="product", **TINY)).raise_for_status()


def test_a_job_trains_while_wait_reports_its_progress(client: Client) -> None:
    seen: list[Job] = []
    job = client.submit(X, Y, name="watched", **TINY)
    assert job.status == "queued" and job.name == "watched" and job.epochs == 5
    done = client.wait(job, progress=seen.append)
    assert done.status == "succeeded" and done.epoch == 5 and done.train_loss is not None
    assert seen[-1] == done and all(a.epoch <= b.epoch for a, b in itertools.pairwise(seen))
    assert done.raise_for_status() is done


def test_predictions_and_loss_history_come_back_as_arrays(client: Client, trained: Job) -> None:
    prediction = client.predict(trained, X[:10])
    assert prediction.predictions.shape == (10, 1) and prediction.predictions.dtype == np.float64
    assert prediction.probabilities is None
    history = client.loss(trained.id)
    assert history.epochs == (1, 2, 3, 4, 5) and history.val_loss is None
    assert history.train_loss[-1] == pytest.approx(trained.train_loss)


def test_the_model_and_the_listings_show_the_job(client: Client, trained: Job) -> None:
    model = client.get_model(trained)
    assert (model.task, model.n_features, model.n_outputs, model.name) == (
        "regression",
        2,
        1,
        "product",
    )
    assert trained.id in {job.id for job in client.list_jobs(status="succeeded", limit=500)}
    assert trained.id in {m.id for m in client.list_models(limit=500)}
    assert client.list_jobs(limit=1).next_offset == 1


def test_a_classifier_answers_labels_and_probabilities(client: Client) -> None:
    labels = np.where(Y > 0, "same sign", "opposite")
    job = client.wait(client.submit(X, labels, task="classification", **TINY))
    prediction = client.predict(job.raise_for_status(), X[:8])
    assert client.get_model(job).classes == ("opposite", "same sign")
    assert prediction.predictions.dtype.kind == "U" and prediction.predictions.shape == (8,)
    assert prediction.probabilities is not None and prediction.probabilities.shape == (8, 2)
    np.testing.assert_allclose(prediction.probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_many_rows_are_predicted_across_several_requests(client: Client, trained: Job) -> None:
    many = RNG.uniform(-2, 2, size=(60_000, 2))
    prediction = client.predict(trained, many)
    assert prediction.predictions.shape == (60_000, 1)
    np.testing.assert_allclose(
        prediction.predictions[-5:], client.predict(trained, many[-5:]).predictions, rtol=1e-6
    )


def test_a_long_loss_history_is_read_across_its_pages(client: Client) -> None:
    """The service answers at most 10,000 epochs at a time."""
    job = client.submit(X[:4], Y[:4], hidden_layers=[2], epochs=10_050)
    history = client.loss(client.wait(job).raise_for_status())
    assert history.epochs == tuple(range(1, 10_051))


def test_a_resent_submit_makes_no_second_job(client: Client) -> None:
    first = client.submit(X, Y, idempotency_key="retry-me", **TINY)
    again = client.submit(X, Y, idempotency_key="retry-me", **TINY)
    assert again.id == first.id


def test_errors_carry_the_service_s_kind_and_detail(
    service: ServiceProcess, client: Client, trained: Job
) -> None:
    with pytest.raises(NotFound) as missing:
        client.get_job("no-such-job")
    assert (missing.value.status_code, missing.value.kind) == (404, "not_found")
    with pytest.raises(ValidationError, match="epochs") as refused:
        client.submit(X, Y, epochs=0)
    assert refused.value.status_code == 422
    with pytest.raises(InvalidInput, match="feature"):
        client.predict(trained, np.zeros((2, 3)))
    with Client(service.url, api_key="wrong") as stranger, pytest.raises(Unauthorized) as denied:
        stranger.list_jobs()
    assert denied.value.kind == "unauthorized"
    with Client(service.url, api_key=OTHER_KEY) as other, pytest.raises(NotFound):
        other.get_job(trained)  # another key's jobs do not exist for this one


def test_a_model_is_not_ready_until_its_job_succeeds(client: Client, trained: Job) -> None:
    # Several batches an epoch: a cancel is noticed between batches.
    job = client.submit(X, Y, hidden_layers=[64], epochs=100_000, batch_size=8)
    with pytest.raises(ModelNotReady) as not_ready:
        client.predict(job, X[:1])
    assert (not_ready.value.status_code, not_ready.value.kind) == (409, "model_not_ready")
    with pytest.raises(WaitTimeout) as waited:
        client.wait(job, timeout=0.3)
    assert waited.value.job.status in ("queued", "running")
    client.cancel(job)
    cancelled = client.wait(job)
    assert cancelled.status == "cancelled"
    with pytest.raises(JobFailed, match="cancelled"):
        cancelled.raise_for_status()
    with pytest.raises(Conflict, match="already succeeded"):
        client.cancel(trained)


def test_a_deleted_model_is_gone(client: Client) -> None:
    job = client.wait(client.submit(X, Y, **TINY))
    client.delete(job)
    with pytest.raises(NotFound):
        client.get_job(job)


def test_the_async_client_does_the_same_as_coroutines(service: ServiceProcess) -> None:
    async def scenario() -> None:
        async with AsyncClient(service.url, api_key=KEY) as client:
            job = await client.wait(await client.submit(X, Y, **TINY))
            first, second = await asyncio.gather(
                client.predict(job, X[:3]), client.predict(job, X[3:5])
            )
            history = await client.loss(job)
            assert first.predictions.shape == (3, 1) and second.predictions.shape == (2, 1)
            assert len(history) == 5 and (await client.get_model(job)).n_features == 2
            assert job.id in {j.id for j in await client.list_jobs(limit=500)}
            with pytest.raises(NotFound):
                await client.cancel("no-such-job")

    asyncio.run(scenario())


def test_a_dataset_uploaded_once_trains_jobs(
    service: ServiceProcess, client: Client, tmp_path: Path
) -> None:
    """Runs where the service has POST /datasets (being built beside this client)."""
    paths = httpx.get(f"{service.url}/openapi.json").json()["paths"]
    if "/datasets" not in paths:
        pytest.skip("this service has no /datasets endpoint yet")
    csv = tmp_path / "product.csv"
    csv.write_text("a,b,product\n" + "".join(f"{a},{b},{a * b}\n" for a, b in X))
    dataset = client.upload_dataset(csv, target="product", name="product")
    assert (dataset.n_rows, dataset.target, dataset.feature_names) == (64, "product", ("a", "b"))
    assert dataset.id in {d.id for d in client.list_datasets()}
    assert client.get_dataset(dataset.id).n_rows == 64
    job = client.wait(client.submit(dataset_id=dataset.id, **TINY)).raise_for_status()
    assert (job.n_rows, job.dataset_id) == (64, dataset.id)
    assert client.predict(job, X[:2]).predictions.shape == (2, 1)
    from_arrays = client.upload_dataset(X, y=Y, feature_names=["a", "b"])
    assert from_arrays.n_rows == 64
    client.delete_dataset(from_arrays)
    with pytest.raises(NotFound):
        client.get_dataset(from_arrays.id)


# Sweeps: submit a grid or a random search, follow it, use its best trial as a model.

LR, SEED = "training.learning_rate", "training.seed"


def test_the_sweep_body_is_the_base_job_and_one_search() -> None:
    base = ops.job_body(X[:3], Y[:3], epochs=5)
    body = ops.sweep_body(
        base, grid={LR: np.array([0.01, 0.1]), SEED: (0, np.int64(1))}, random=None, name="lr"
    )
    assert body == {"base": base, "name": "lr", "grid": {LR: [0.01, 0.1], SEED: [0, 1]}}
    assert type(body["grid"][SEED][1]) is int
    with pytest.raises(ValueError, match="exactly one"):
        ops.sweep_body(base, grid=None, random=None, name=None)
    with pytest.raises(ValueError, match="exactly one"):
        ops.sweep_body(base, grid={SEED: [0]}, random={"n": 1, "space": {SEED: [0]}}, name=None)


def test_a_grid_sweep_trains_every_combination_and_its_best_trial_predicts(
    service: ServiceProcess, client: Client
) -> None:
    grid: dict[str, Any] = {LR: np.array([0.01, 0.1]), SEED: [0, 1]}
    sweep = client.submit_sweep(X, Y, grid=grid, name="lr", **TINY)
    assert isinstance(sweep, Sweep) and sweep.name == "lr" and sweep.n_trials == 4
    assert sweep.status in ("queued", "running") and not sweep.finished
    assert [t.params for t in sweep.trials] == [
        {LR: lr, SEED: seed} for lr in (0.01, 0.1) for seed in (0, 1)
    ]
    assert sweep.search == {"grid": {LR: [0.01, 0.1], SEED: [0, 1]}}

    seen: list[Sweep] = []
    done = client.wait_sweep(sweep, timeout=60, progress=seen.append)
    assert seen[-1] == done and done.finished and done.succeeded
    assert done.counts["succeeded"] == 4 and done.created_at is not None
    assert all(t.succeeded and t.epoch == t.epochs == 5 for t in done.trials)
    assert done.best_by == "train_loss" and done.best is not None and done.best in done.trials
    assert done.best.train_loss == min(t.train_loss or np.inf for t in done.trials)

    # A trial is a job: every job and model method takes it.
    best: Trial = done.best
    assert client.predict(best, X[:3]).predictions.shape == (3, 1)
    assert len(client.loss(best)) == 5 and client.get_model(best).n_features == 2
    assert client.wait(best).status == "succeeded" and client.get_job(best.id).id == best.id

    listed = {s.id: s for s in client.list_sweeps(limit=500)}
    assert listed[done.id].best == done.best and listed[done.id].trials == ()
    with Client(service.url, api_key=OTHER_KEY) as other, pytest.raises(NotFound):
        other.get_sweep(done)  # another key's sweeps do not exist for this one

    client.delete_sweep(done)
    with pytest.raises(NotFound):
        client.get_sweep(done.id)
    with pytest.raises(NotFound):
        client.get_job(best)


def test_a_random_sweep_is_cancelled_then_deleted(client: Client) -> None:
    space = {LR: {"low": 1e-3, "high": 1e-1}, "model.activation": ["tanh", "relu"]}
    # Several batches an epoch and endless epochs: the trials run until cancelled.
    sweep = client.submit_sweep(
        X,
        Y,
        random={"n": 3, "seed": 7, "space": space},
        hidden_layers=[16],
        epochs=100_000,
        batch_size=8,
    )
    assert len(sweep.trials) == 3
    assert all(1e-3 <= t.params[LR] <= 1e-1 for t in sweep.trials)
    assert {t.params["model.activation"] for t in sweep.trials} <= {"tanh", "relu"}
    with pytest.raises(WaitTimeout, match=f"sweep {sweep.id} is still") as waited:
        client.wait_sweep(sweep, timeout=0.2)
    assert waited.value.sweep is not None and waited.value.job is None
    assert waited.value.sweep.id == sweep.id
    with pytest.raises(Conflict, match="queued or running"):
        client.delete_sweep(sweep)

    client.cancel_sweep(sweep)
    cancelled = client.wait_sweep(sweep, timeout=30)
    assert cancelled.status == "cancelled" and cancelled.counts["cancelled"] == 3
    assert cancelled.best is None and not cancelled.succeeded
    client.delete_sweep(cancelled)


def test_the_service_refuses_a_sweep_over_an_unknown_setting(client: Client) -> None:
    with pytest.raises(InvalidInput, match=r"cannot vary training\.nope"):
        client.submit_sweep(X, Y, grid={"training.nope": [1, 2]}, **TINY)


def test_the_async_client_runs_a_sweep_too(service: ServiceProcess) -> None:
    async def scenario() -> None:
        async with AsyncClient(service.url, api_key=KEY) as client:
            body = {"base": ops.job_body(X, Y, **TINY), "grid": {SEED: [0, 1]}}
            sweep = await client.wait_sweep(await client.submit_sweep_body(body), timeout=60)
            assert sweep.succeeded and sweep.best is not None
            assert sweep.id in {s.id for s in await client.list_sweeps(limit=500)}
            assert (await client.get_sweep(sweep.id)).trials == sweep.trials
            assert (await client.predict(sweep.best, X[:2])).predictions.shape == (2, 1)
            await client.delete_sweep(sweep)
            with pytest.raises(NotFound):
                await client.cancel_sweep(sweep)

    asyncio.run(scenario())
