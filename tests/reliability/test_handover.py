"""A mixed fleet never loses a job to a hand-over: a checkpoint written by one engine resumes on
the other, through real worker processes killed with SIGKILL (on a GPU machine,
bench/gpu_check.py runs the same hand-over between a CPU and a CUDA worker)."""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from service.training.network import NetworkConfig, build_network
from service.training.trainer import EngineChoice, TrainingConfig, train
from tests.reliability.conftest import Start
from tests.support import checkpointed_epoch, cpu_tensors, sinc_data, wait_for_job

pytestmark = pytest.mark.e2e

# For a few thousand steps the two engines' float32 rounding keeps their histories within
# ~1e-4 of each other; beyond, tiny differences grow chaotically (as between any two float32
# runs with other summation orders), so the job stays that short.
EPOCHS = 400
CHECKPOINT_OFTEN = {"SERVICE_CHECKPOINT_SECONDS": "0.05"}


def job_body() -> dict[str, Any]:
    x, y = sinc_data(30)
    return {
        "name": "handover",
        "data": {"x": x.tolist(), "y": y.tolist()},
        "model": {"hidden_layers": [32]},
        "training": {"epochs": EPOCHS, "batch_size": 100, "seed": 7},
    }


def unbroken_history(body: dict[str, Any], engine: EngineChoice) -> list[float]:
    x, y = np.asarray(body["data"]["x"]), np.asarray(body["data"]["y"])
    architecture = NetworkConfig(2, tuple(body["model"]["hidden_layers"]), 1, "tanh", "tanh")
    torch.manual_seed(body["training"]["seed"])
    result = train(
        build_network(architecture),
        architecture,
        cpu_tensors(x, y, seed=body["training"]["seed"]),
        TrainingConfig(epochs=EPOCHS, batch_size=100, seed=body["training"]["seed"]),
        engine=engine,
    )
    return [e.train_loss for e in result.history]


@pytest.mark.parametrize(("first", "second"), [("numpy", "torch"), ("torch", "numpy")])
def test_a_job_checkpointed_by_one_engine_resumes_on_the_other_after_a_sigkill(
    api: httpx.Client, start: Start, database_url: str, first: str, second: str
) -> None:
    body = job_body()
    victim = start("worker", first, SERVICE_ENGINE=first, **CHECKPOINT_OFTEN)
    job_id = api.post("/jobs", json=body).raise_for_status().json()["id"]
    deadline = time.monotonic() + 60
    while (epoch := checkpointed_epoch(database_url, job_id)) is None:
        assert time.monotonic() < deadline, victim.log_tail()
        time.sleep(0.005)
    victim.signal(signal.SIGKILL)
    victim.process.wait()  # type: ignore[union-attr]
    killed = api.get(f"/jobs/{job_id}").json()
    assert killed["status"] == "running" and killed["device"] == "cpu", killed
    assert epoch < EPOCHS

    rescuer = start("worker", second, SERVICE_ENGINE=second, **CHECKPOINT_OFTEN)
    done = wait_for_job(api, job_id, timeout=120)
    assert done["status"] == "succeeded", rescuer.log_tail()
    assert done["attempts"] == 2 and done["device"] == "cpu"
    log = rescuer.log_tail(200)
    assert f"written by the {first} engine on cpu" in log, log
    resumed_after = int(log.split("resuming from its checkpoint after epoch ")[1].split()[0])
    assert resumed_after >= epoch

    history = api.get(f"/models/{job_id}/loss").json()
    assert history["epochs"] == list(range(1, EPOCHS + 1))  # every epoch recorded once
    model = api.get(f"/models/{job_id}").json()
    assert (model["metrics"]["engine"], model["metrics"]["device"]) == (second, "cpu")
    for engine in (first, second):
        reference = unbroken_history(body, engine)  # type: ignore[arg-type]
        assert history["train_loss"][-1] == pytest.approx(reference[-1], rel=0.01)
        np.testing.assert_allclose(history["train_loss"], reference, rtol=2e-3)
