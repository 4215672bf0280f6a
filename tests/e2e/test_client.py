"""The Python client against a real service (API keys on): every method, and every error it
turns into an exception."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

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
    Unauthorized,
    ValidationError,
    WaitTimeout,
)
from tests.support import ServiceProcess

pytestmark = pytest.mark.e2e

KEY, OTHER_KEY = "key-one", "key-two"
RNG = np.random.default_rng(0)
X = RNG.uniform(-2, 2, size=(64, 2))
Y = X[:, 0] * X[:, 1]
TINY = {"hidden_layers": [8], "epochs": 5, "batch_size": 16}


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
