"""Sweeps through the Python client, against a real service (API keys on): submit a grid or a
random search, follow it, use its best trial as a model, cancel and delete it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from service.client import (
    AsyncClient,
    Client,
    Conflict,
    InvalidInput,
    NotFound,
    Sweep,
    Trial,
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
LR, SEED = "training.learning_rate", "training.seed"


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
