"""The notebook's job, submitted over HTTP to real processes, must match the notebook."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support import ServiceProcess, grid, sinc, sinc_job

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def notebook_job(api: httpx.Client, service: ServiceProcess) -> dict[str, Any]:
    """Submit the notebook's job and watch it: snapshots of /loss and the job while it runs."""
    submitted = time.perf_counter()
    response = api.post("/jobs", json=sinc_job())
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    live_lengths, live_epochs = [], []
    while True:
        job = api.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        live_epochs.append(job["epoch"])
        live_lengths.append(len(api.get(f"/models/{job_id}/loss").json()["epochs"]))
        assert time.perf_counter() - submitted < 180, service.log_tail()
        time.sleep(0.1)
    elapsed = time.perf_counter() - submitted
    print(f"notebook job: {elapsed:.2f}s submit->{job['status']}, final loss {job['train_loss']}")
    return {
        "job": job,
        "elapsed": elapsed,
        "live_lengths": live_lengths,
        "live_epochs": live_epochs,
    }


def test_notebook_job_reaches_the_notebook_loss(
    notebook_job: dict[str, Any], service: ServiceProcess
) -> None:
    job = notebook_job["job"]
    assert job["status"] == "succeeded", (job, service.log_tail())
    assert job["epoch"] == 400 and job["attempts"] == 1 and job["device"] == "cpu"
    assert job["train_loss"] <= 0.005


def test_predictions_on_the_notebook_eval_grid_are_close_to_sinc(
    notebook_job: dict[str, Any], api: httpx.Client
) -> None:
    eval_x = grid(100)
    response = api.post(
        f"/models/{notebook_job['job']['id']}/predict", json={"inputs": eval_x.tolist()}
    )
    assert response.status_code == 200, response.text
    predictions = np.asarray(response.json()["predictions"])
    assert predictions.shape == (10_000, 1)
    rmse = float(np.sqrt(np.mean((predictions[:, 0] - sinc(eval_x[:, 0], eval_x[:, 1])) ** 2)))
    print(f"eval-grid RMSE {rmse:.4f}")
    assert rmse <= 0.06


def test_loss_history_has_every_epoch_and_grew_while_training(
    notebook_job: dict[str, Any], api: httpx.Client
) -> None:
    loss = api.get(f"/models/{notebook_job['job']['id']}/loss").json()
    assert loss["status"] == "succeeded"
    assert loss["epochs"] == list(range(1, 401))
    assert loss["val_loss"] is None
    assert loss["train_loss"][-1] == notebook_job["job"]["train_loss"]
    assert loss["train_loss"][-1] < loss["train_loss"][0] / 5
    lengths = notebook_job["live_lengths"]
    # Seen mid-way: some loss rows, not all of them, and never shrinking.
    assert any(0 < n < 400 for n in lengths), lengths
    assert lengths == sorted(lengths)
    assert any(0 < e < 400 for e in notebook_job["live_epochs"])


def test_model_describes_its_architecture_scalers_and_metrics(
    notebook_job: dict[str, Any], api: httpx.Client
) -> None:
    model = api.get(f"/models/{notebook_job['job']['id']}").json()
    assert model["architecture"] == {
        "n_inputs": 2,
        "hidden_layers": [80],
        "n_outputs": 1,
        "activation": "tanh",
        "output_activation": "tanh",
    }
    assert model["n_features"] == 2 and model["classes"] is None
    inputs = model["scalers"]["inputs"]
    assert inputs["kind"] == "standard"
    np.testing.assert_allclose(inputs["mean"], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(inputs["scale"], np.std(grid(50), axis=0))
    assert model["scalers"]["input_min"] == [-10.0, -10.0]
    assert model["scalers"]["input_max"] == [10.0, 10.0]
    assert model["metrics"]["final_train_loss"] == notebook_job["job"]["train_loss"]
    assert model["metrics"]["epochs_trained"] == 400
    assert notebook_job["job"]["id"] in [m["id"] for m in api.get("/models").json()["models"]]


def test_wrong_feature_count_at_predict_time_is_422(
    notebook_job: dict[str, Any], api: httpx.Client
) -> None:
    response = api.post(
        f"/models/{notebook_job['job']['id']}/predict", json={"inputs": [[1.0, 2.0, 3.0]]}
    )
    assert response.status_code == 422
    assert "2 features" in response.json()["detail"]


def test_concurrent_predictions_equal_one_by_one_predictions(
    notebook_job: dict[str, Any], service: ServiceProcess
) -> None:
    """Under load the server batches requests together; each must still get its own answer."""
    import asyncio

    model_id = notebook_job["job"]["id"]
    rows = [[float(i % 19) - 9.0, float(i % 7) * 1.5 - 4.0] for i in range(96)]

    async def all_at_once() -> list[Any]:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(f"/models/{model_id}/predict", json={"inputs": [row]})
                    for row in rows
                )
            )
        return [r.json()["predictions"][0][0] for r in responses]

    together = asyncio.run(all_at_once())
    with httpx.Client(base_url=service.url, timeout=30) as client:
        alone = [
            client.post(f"/models/{model_id}/predict", json={"inputs": [row]}).json()[
                "predictions"
            ][0][0]
            for row in rows
        ]
    assert together == alone  # bit for bit: a batch's size never shows in a row's answer
