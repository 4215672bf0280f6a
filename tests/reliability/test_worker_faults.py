"""Faults injected into real worker processes: SIGKILL, SIGSTOP/SIGCONT, SIGTERM, poison jobs."""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from service.training.network import NetworkConfig, build_network
from service.training.trainer import TrainingConfig, train
from tests.reliability.conftest import Start
from tests.support import (
    ServiceProcess,
    checkpointed_epoch,
    cpu_tensors,
    sinc_data,
    wait_for_job,
)

pytestmark = pytest.mark.e2e

# Checkpoint often, so a kill lands after one.
CHECKPOINT_FAST = {"SERVICE_CHECKPOINT_SECONDS": "0.3"}
EPOCHS = 1500


def long_job(epochs: int = EPOCHS, seed: int = 7) -> dict[str, Any]:
    x, y = sinc_data(30)
    return {
        "name": "long",
        "data": {"x": x.tolist(), "y": y.tolist()},
        "model": {"hidden_layers": [32]},
        "training": {"epochs": epochs, "batch_size": 100, "seed": seed},
    }


def submit(api: httpx.Client, body: dict[str, Any]) -> str:
    response = api.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def wait_until(condition: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def running_on(api: httpx.Client, job_id: str, min_epoch: int) -> dict[str, Any] | None:
    job: dict[str, Any] = api.get(f"/jobs/{job_id}").json()
    return job if job["status"] == "running" and job["epoch"] >= min_epoch else None


def reference_history(body: dict[str, Any]) -> list[float]:
    """The same job trained without interruption, by the trainer directly."""
    x, y = np.asarray(body["data"]["x"]), np.asarray(body["data"]["y"])
    tensors = cpu_tensors(x, y, seed=body["training"]["seed"])
    architecture = NetworkConfig(2, tuple(body["model"]["hidden_layers"]), 1, "tanh", "tanh")
    torch.manual_seed(body["training"]["seed"])
    result = train(
        build_network(architecture),
        architecture,
        tensors,
        TrainingConfig(
            epochs=body["training"]["epochs"],
            batch_size=body["training"]["batch_size"],
            seed=body["training"]["seed"],
        ),
    )
    return [e.train_loss for e in result.history]


def test_a_killed_worker_s_job_resumes_from_its_checkpoint_and_matches_an_unbroken_run(
    api: httpx.Client, start: Start, database_url: str
) -> None:
    body = long_job()
    first = start("worker", **CHECKPOINT_FAST)
    job_id = submit(api, body)
    wait_until(lambda: running_on(api, job_id, min_epoch=EPOCHS // 4), what="progress")
    # Progress alone does not mean a checkpoint was written yet (on a fast machine the first
    # one can come after epoch EPOCHS // 4): kill only once there is one to resume from.
    wait_until(lambda: checkpointed_epoch(database_url, job_id), what="a checkpoint")
    first.signal(signal.SIGKILL)
    first.process.wait()  # type: ignore[union-attr]
    killed_at = api.get(f"/jobs/{job_id}").json()["epoch"]
    kept = len(api.get(f"/models/{job_id}/loss").json()["epochs"])
    assert 0 < kept <= killed_at

    second = start("worker", **CHECKPOINT_FAST)
    lengths = []
    while (job := api.get(f"/jobs/{job_id}").json())["status"] in ("queued", "running"):
        lengths.append(len(api.get(f"/models/{job_id}/loss").json()["epochs"]))
        time.sleep(0.05)
    assert job["status"] == "succeeded", second.log_tail()
    assert job["attempts"] == 2
    assert "resuming from its checkpoint" in second.log_tail(200)
    # Never back to epoch 0: the second attempt kept what the checkpoint covered.
    assert min(lengths) > 0

    loss = api.get(f"/models/{job_id}/loss").json()
    assert loss["epochs"] == list(range(1, EPOCHS + 1))
    np.testing.assert_allclose(loss["train_loss"], reference_history(body), rtol=1e-6)


def test_a_frozen_worker_cannot_write_once_its_lease_is_gone(
    api: httpx.Client, start: Start
) -> None:
    frozen = start("worker", "frozen")
    job_id = submit(api, long_job(epochs=800))
    job = wait_until(lambda: running_on(api, job_id, min_epoch=5), what="first worker")
    assert job["attempts"] == 1
    frozen.signal(signal.SIGSTOP)
    try:
        rescuer = start("worker", "rescuer")
        done = wait_for_job(api, job_id, timeout=120)
        assert done["status"] == "succeeded", rescuer.log_tail()
        assert done["attempts"] == 2
        before = api.get(f"/models/{job_id}/loss").json()
    finally:
        frozen.signal(signal.SIGCONT)
    # The woken worker finds its lease gone and writes nothing: the job stays as it was.
    wait_until(lambda: "lease lost" in frozen.log_tail(100), timeout=30, what="lease lost")
    assert api.get(f"/models/{job_id}/loss").json() == before
    assert api.get(f"/jobs/{job_id}").json()["attempts"] == 2
    assert [m["id"] for m in api.get("/models").json()["models"]] == [job_id]
    # And it goes on working.
    next_job = submit(api, long_job(epochs=5))
    assert wait_for_job(api, next_job)["status"] == "succeeded"


def test_a_job_that_kills_every_worker_fails_after_max_attempts_and_others_flow(
    api: httpx.Client, start: Start
) -> None:
    poison = submit(api, long_job(epochs=100_000))
    for attempt in (1, 2, 3):
        worker = start("worker", f"victim{attempt}")

        def claimed_again(attempt: int = attempt) -> bool:
            job = running_on(api, poison, min_epoch=1)
            return job is not None and job["attempts"] == attempt

        wait_until(claimed_again, what=f"attempt {attempt}")
        worker.signal(signal.SIGKILL)
        worker.process.wait()  # type: ignore[union-attr]
    healthy = submit(api, long_job(epochs=5))
    survivor = start("worker", "survivor")
    failed = wait_for_job(api, poison, timeout=60)
    assert failed["status"] == "failed", survivor.log_tail()
    assert failed["attempts"] == 3 and "stopped responding" in failed["error"]
    assert wait_for_job(api, healthy)["status"] == "succeeded"


def test_sigterm_hands_the_job_back_with_a_checkpoint_and_no_attempt_counted(
    api: httpx.Client, start: Start
) -> None:
    worker = start("worker", **CHECKPOINT_FAST)
    job_id = submit(api, long_job())
    wait_until(lambda: running_on(api, job_id, min_epoch=50), what="progress")
    # Generous: the timeout only keeps a hung worker from hanging the suite.
    assert worker.stop(timeout=120) == 0, worker.log_tail()
    handed_back = api.get(f"/jobs/{job_id}").json()
    assert handed_back["status"] == "queued" and handed_back["attempts"] == 0
    assert "handed back to the queue at epoch" in worker.log_tail()
    kept = len(api.get(f"/models/{job_id}/loss").json()["epochs"])
    assert kept >= 50

    successor = start("worker", "successor")
    done = wait_for_job(api, job_id, timeout=120)
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert f"resuming from its checkpoint after epoch {kept}" in successor.log_tail(200)
    assert api.get(f"/models/{job_id}/loss").json()["epochs"] == list(range(1, EPOCHS + 1))


def test_serve_forwards_sigterm_to_its_workers(start: Start) -> None:
    server: ServiceProcess = start("serve", **CHECKPOINT_FAST)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        job_id = submit(client, long_job())
        wait_until(lambda: running_on(client, job_id, min_epoch=20), what="progress")
    assert server.stop(timeout=20) == 0
    log = server.log_tail(200)
    assert "signal 15: stopping" in log and "handed back to the queue" in log
