"""A worker killed mid-sweep loses no trial: the stack resumes from its trials' checkpoints."""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from service.training.engine import TrainingConfig
from service.training.network import NetworkConfig, build_network
from service.training.stacked_trainer import Trial, train_stack
from service.training.trainer import TrainingResult
from tests.reliability.conftest import Start
from tests.reliability.test_worker_faults import CHECKPOINT_FAST, long_job, wait_until
from tests.support import checkpointed_epoch, cpu_tensors

pytestmark = pytest.mark.e2e

EPOCHS = 1200
RATES = (0.003, 0.01)
SEEDS = (1, 2)


def unbroken_histories(body: dict[str, Any]) -> list[list[float]]:
    """The sweep's stack trained without interruption, by the loop directly."""
    x, y = np.asarray(body["data"]["x"]), np.asarray(body["data"]["y"])
    architecture = NetworkConfig(2, tuple(body["model"]["hidden_layers"]), 1, "tanh", "tanh")
    trials = []
    for rate in RATES:
        for seed in SEEDS:
            torch.manual_seed(seed)
            trials.append(
                Trial(
                    config=TrainingConfig(
                        epochs=EPOCHS, batch_size=100, seed=seed, learning_rate=rate
                    ),
                    data=cpu_tensors(x, y, seed=seed),
                    initial=build_network(architecture).state_dict(),
                )
            )
    histories = []
    for outcome in train_stack(architecture, trials):
        assert isinstance(outcome, TrainingResult)
        histories.append([e.train_loss for e in outcome.history])
    return histories


def test_a_killed_worker_s_sweep_resumes_every_trial_from_its_checkpoint(
    api: httpx.Client, start: Start, database_url: str
) -> None:
    body = long_job(epochs=EPOCHS)
    grid = {"training.learning_rate": list(RATES), "training.seed": list(SEEDS)}
    first = start("worker", **CHECKPOINT_FAST)
    sweep = api.post("/sweeps", json={"base": body, "grid": grid}).raise_for_status().json()
    trial_ids = [t["id"] for t in sweep["trials"]]
    wait_until(
        lambda: all(checkpointed_epoch(database_url, t) for t in trial_ids),
        what="a checkpoint of every trial",
    )
    first.signal(signal.SIGKILL)
    first.process.wait()  # type: ignore[union-attr]
    assert api.get(f"/sweeps/{sweep['id']}").json()["counts"]["running"] == 4

    second = start("worker", **CHECKPOINT_FAST)
    deadline = time.monotonic() + 120
    while (done := api.get(f"/sweeps/{sweep['id']}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, second.log_tail()
        time.sleep(0.1)
    assert done["status"] == "succeeded", second.log_tail()
    log = second.log_tail(200)
    assert "trials as one stack" in log and "resuming from its checkpoint" in log
    for trial, unbroken in zip(done["trials"], unbroken_histories(body), strict=True):
        assert api.get(f"/jobs/{trial['id']}").json()["attempts"] == 2
        loss = api.get(f"/models/{trial['id']}/loss").json()
        assert loss["epochs"] == list(range(1, EPOCHS + 1))
        np.testing.assert_allclose(loss["train_loss"], unbroken, rtol=1e-6)
