"""Jobs through real processes: classification, cancel, failure, deletion, target scaling."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support import ServiceProcess, wait_for_job

pytestmark = pytest.mark.e2e


def submit(api: httpx.Client, body: dict[str, Any]) -> str:
    response = api.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def blobs(n: int = 200, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = {"red": (-3.0, 0.0), "green": (3.0, 0.0), "blue": (0.0, 4.0)}
    labels = [list(centres)[i % 3] for i in range(n)]
    x = np.array([centres[label] for label in labels]) + rng.normal(scale=0.7, size=(n, 2))
    return x, labels


def test_classification_predicts_labels_and_probabilities(
    api: httpx.Client, service: ServiceProcess
) -> None:
    x, labels = blobs()
    job_id = submit(
        api,
        {
            "task": "classification",
            "data": {"x": x.tolist(), "y": labels},
            "model": {"hidden_layers": [16], "activation": "relu"},
            "training": {"epochs": 40, "batch_size": 32, "validation_fraction": 0.2},
        },
    )
    job = wait_for_job(api, job_id)
    assert job["status"] == "succeeded", (job, service.log_tail())
    assert job["val_loss"] is not None
    model = api.get(f"/models/{job_id}").json()
    assert model["classes"] == ["blue", "green", "red"] and model["n_outputs"] == 3
    result = api.post(
        f"/models/{job_id}/predict", json={"inputs": [[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]]}
    ).json()
    assert result["predictions"] == ["red", "green", "blue"]
    probabilities = np.asarray(result["probabilities"])
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    loss = api.get(f"/models/{job_id}/loss").json()
    assert len(loss["val_loss"]) == len(loss["epochs"]) == 40


def test_integer_labels_come_back_as_integers(api: httpx.Client) -> None:
    x, labels = blobs(90)
    as_ints = [{"red": 0, "green": 1, "blue": 2}[label] for label in labels]
    job_id = submit(
        api,
        {
            "task": "classification",
            "data": {"x": x.tolist(), "y": as_ints},
            "training": {"epochs": 30, "batch_size": 30},
        },
    )
    assert wait_for_job(api, job_id)["status"] == "succeeded"
    result = api.post(f"/models/{job_id}/predict", json={"inputs": [[-3.0, 0.0]]}).json()
    assert result["predictions"] == [0]


def test_target_scaling_is_undone_at_predict_time(api: httpx.Client) -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(256, 1))
    y = 1000.0 + 500.0 * x
    job_id = submit(
        api,
        {
            "data": {"x": x.tolist(), "y": y.tolist()},
            "model": {"hidden_layers": [8], "output_activation": None},
            "training": {"epochs": 150, "batch_size": 64, "learning_rate": 0.02},
            "preprocessing": {"targets": "standard"},
        },
    )
    assert wait_for_job(api, job_id)["status"] == "succeeded"
    scalers = api.get(f"/models/{job_id}").json()["scalers"]
    assert scalers["targets"]["kind"] == "standard"
    predictions = api.post(f"/models/{job_id}/predict", json={"inputs": [[0.0], [0.5]]}).json()
    np.testing.assert_allclose(
        np.asarray(predictions["predictions"])[:, 0], [1000.0, 1250.0], rtol=0.02
    )


def test_cancel_stops_a_running_job_and_keeps_its_loss_history(api: httpx.Client) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 4))
    job_id = submit(
        api,
        {
            "data": {"x": x.tolist(), "y": x[:, :1].tolist()},
            "training": {"epochs": 100_000, "batch_size": 16},
        },
    )
    wait_for_job(api, job_id, statuses=("running",))
    deadline = time.monotonic() + 60
    while (before := api.get(f"/jobs/{job_id}").json())["epoch"] < 2:
        assert time.monotonic() < deadline, before
        time.sleep(0.1)
    # The cancel must land mid-training, on a job still running with epochs to keep.
    assert before["status"] == "running", before
    assert api.post(f"/jobs/{job_id}/cancel").status_code == 200
    job = wait_for_job(api, job_id, timeout=30)
    assert job["status"] == "cancelled" and job["cancel_requested"]
    loss = api.get(f"/models/{job_id}/loss").json()
    assert loss["status"] == "cancelled" and len(loss["epochs"]) >= before["epoch"]
    assert loss["epochs"] == list(range(1, len(loss["epochs"]) + 1))
    response = api.post(f"/models/{job_id}/predict", json={"inputs": [[0.0] * 4]})
    assert response.status_code == 409 and "cancelled" in response.json()["detail"]
    assert api.post(f"/jobs/{job_id}/cancel").json()["status"] == "cancelled"  # idempotent


def test_a_failing_job_is_reported_and_the_worker_goes_on(api: httpx.Client) -> None:
    x = np.linspace(-1, 1, 64).reshape(-1, 1)
    diverging = submit(
        api,
        {
            "data": {"x": x.tolist(), "y": (x * 1e30).tolist()},
            "model": {"output_activation": None},
            "training": {"optimizer": "sgd", "learning_rate": 1e10, "epochs": 50, "batch_size": 64},
            "preprocessing": {"inputs": "none"},
        },
    )
    healthy = submit(
        api,
        {"data": {"x": x.tolist(), "y": x.tolist()}, "training": {"epochs": 5, "batch_size": 16}},
    )
    failed = wait_for_job(api, diverging)
    assert failed["status"] == "failed"
    assert "diverged" in failed["error"] and "epoch" in failed["error"]
    assert wait_for_job(api, healthy)["status"] == "succeeded"
    assert api.post(f"/models/{diverging}/predict", json={"inputs": [[0.0]]}).status_code == 409


def test_delete_removes_model_job_and_loss_history(api: httpx.Client) -> None:
    x = np.linspace(-1, 1, 32).reshape(-1, 1)
    job_id = submit(api, {"data": {"x": x.tolist(), "y": x.tolist()}, "training": {"epochs": 3}})
    assert wait_for_job(api, job_id)["status"] == "succeeded"
    assert api.post(f"/models/{job_id}/predict", json={"inputs": [[0.5]]}).status_code == 200
    assert api.delete(f"/models/{job_id}").status_code == 204
    for response in (
        api.get(f"/models/{job_id}"),
        api.get(f"/jobs/{job_id}"),
        api.get(f"/models/{job_id}/loss"),
        api.post(f"/models/{job_id}/predict", json={"inputs": [[0.5]]}),
    ):
        assert response.status_code == 404
    assert api.delete(f"/models/{job_id}").status_code == 404
