"""Jobs whose epochs are long: a shutdown and the runtime limit act between batches, so a
worker never outlasts its stop grace and an operator's stop never costs an attempt."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
import pytest

from tests.reliability.conftest import Start
from tests.support import wait_for_job

pytestmark = pytest.mark.e2e


def long_epoch_job(**training: Any) -> dict[str, Any]:
    """30,000 batches of one row an epoch: seconds an epoch, where a batch takes microseconds."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-2, 2, size=(30_000, 2))
    y = np.tanh(x[:, :1] * x[:, 1:])
    return {
        "data": {"x": x.tolist(), "y": y.tolist()},
        "model": {"hidden_layers": [16]},
        "training": {"epochs": 2, "batch_size": 1, **training},
    }


def wait_running(api: httpx.Client, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while api.get(f"/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_shutdown_inside_a_long_epoch_hands_the_job_back_without_an_attempt(
    api: httpx.Client, start: Start
) -> None:
    worker = start("worker", "stopped")
    job_id = api.post("/jobs", json=long_epoch_job()).json()["id"]
    wait_running(api, job_id)
    assert worker.stop(timeout=60) == 0
    handed_back = api.get(f"/jobs/{job_id}").json()
    assert handed_back["status"] == "queued" and handed_back["attempts"] == 0
    assert handed_back["epoch"] == 0  # it stopped inside the first epoch, not at its end
    assert "handed back to the queue mid-epoch" in worker.log_tail()

    start("worker", "successor")
    done = wait_for_job(api, job_id, timeout=120)
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert api.get(f"/models/{job_id}/loss").json()["epochs"] == [1, 2]


def test_the_runtime_limit_ends_a_long_epoch_and_keeps_its_model(
    api: httpx.Client, start: Start
) -> None:
    start("worker")
    job_id = api.post("/jobs", json=long_epoch_job(max_runtime_seconds=0.3)).json()["id"]
    done = wait_for_job(api, job_id, timeout=120)
    assert done["status"] == "succeeded"
    metrics = api.get(f"/models/{job_id}").json()["metrics"]
    assert metrics["stop_reason"] == "max_runtime" and metrics["epochs_trained"] == 1
    assert api.post(f"/models/{job_id}/predict", json={"inputs": [[0.5, 0.5]]}).status_code == 200
