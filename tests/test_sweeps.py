"""Sweeps through the API and an in-process worker: trials are jobs, stacks train together."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.storage.db import Database
from service.training.worker import Worker
from tests.support import submit_job

X = [[v / 4] for v in range(-8, 9)]
BASE: dict[str, Any] = {
    "data": {"x": X, "y": [[math.sin(2 * x[0])] for x in X]},
    "model": {"hidden_layers": [6], "output_activation": None},
    "training": {"epochs": 12, "batch_size": 5},
}


def submit_sweep(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/sweeps", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/sweeps/{response.json()['id']}"
    out: dict[str, Any] = response.json()
    return out


def error_of(client: TestClient, body: dict[str, Any], status: int = 422) -> str:
    response = client.post("/sweeps", json=body)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "detail"}
    detail: str = response.json()["detail"]
    return detail


def train_all(settings: Settings, db: Database) -> None:
    worker = Worker(settings, db)
    while worker.run_once():
        pass


def test_a_grid_queues_one_job_per_combination_in_order(client: TestClient) -> None:
    grid = {"training.learning_rate": [0.01, 0.1], "model.hidden_layers": [[4], [8], [16]]}
    sweep = submit_sweep(client, {"name": "widths", "base": BASE, "grid": grid})
    assert sweep["status"] == "queued" and sweep["n_trials"] == 6
    assert sweep["counts"]["queued"] == 6 and sweep["best"] is None
    assert [t["params"] for t in sweep["trials"]] == [
        {"training.learning_rate": lr, "model.hidden_layers": width}
        for lr in (0.01, 0.1)
        for width in ([4], [8], [16])
    ]
    # Each trial is an ordinary job, with the trial's values in its spec.
    job = client.get(f"/jobs/{sweep['trials'][5]['id']}").json()
    assert job["spec"]["training"]["learning_rate"] == 0.1
    assert job["spec"]["model"]["hidden_layers"] == [16]
    assert job["name"].startswith("widths training.learning_rate=0.1")
    assert client.get(f"/sweeps/{sweep['id']}").json()["trials"] == sweep["trials"]
    listed = client.get("/sweeps").json()
    assert listed["total"] == 1 and listed["sweeps"][0]["id"] == sweep["id"]
    assert "trials" not in listed["sweeps"][0]


def test_a_random_search_draws_the_same_trials_from_the_same_seed(client: TestClient) -> None:
    space = {
        "training.learning_rate": {"low": 1e-4, "high": 1e-1},
        "training.batch_size": {"low": 2, "high": 9, "integer": True},
        "model.activation": ["tanh", "relu", "silu"],
    }
    body = {"base": BASE, "random": {"n": 40, "seed": 7, "space": space}}
    first = [t["params"] for t in submit_sweep(client, body)["trials"]]
    assert first == [t["params"] for t in submit_sweep(client, body)["trials"]]
    rates = np.array([p["training.learning_rate"] for p in first])
    assert ((rates >= 1e-4) & (rates <= 1e-1)).all()
    # Log-uniform by default for learning rates: every decade gets draws, not just the top one.
    assert (rates < 1e-3).sum() >= 5 and (rates < 1e-2).sum() >= 15
    assert {type(p["training.batch_size"]) for p in first} == {int}
    assert {p["model.activation"] for p in first} == {"tanh", "relu", "silu"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"base": BASE, "grid": {"data.x": [[[1.0]]]}}, "a sweep cannot vary data.x"),
        ({"base": BASE, "grid": {"training.learning_rate": [0.1, -1.0]}}, "trial 2"),
        ({"base": BASE, "grid": {"training.epochs": [0]}}, "greater than or equal to 1"),
        ({"base": BASE}, "a grid or a random search, exactly one"),
        (
            {
                "base": BASE,
                "grid": {"training.seed": [1]},
                "random": {"n": 1, "space": {"training.seed": [2]}},
            },
            "exactly one",
        ),
        ({"base": {**BASE, "training": {"epochs": -1}}, "grid": {"training.seed": [1]}}, "base"),
        (
            {"base": BASE, "random": {"n": 2, "space": {"training.seed": {"low": 3, "high": 1}}}},
            "low 3.0 is above high 1.0",
        ),
    ],
)
def test_invalid_sweeps_are_refused_and_store_nothing(
    client: TestClient, body: dict[str, Any], expected: str
) -> None:
    assert expected in error_of(client, body)
    assert client.get("/jobs").json()["total"] == 0
    assert client.get("/sweeps").json()["total"] == 0


def test_trials_past_the_limits_are_refused_whole(
    client: TestClient, settings: Settings, db: Database
) -> None:
    many = {"base": BASE, "grid": {"training.seed": list(range(300))}}
    assert "300 trials, above the limit of 256" in error_of(client, many)
    settings.max_active_jobs_per_key = 5
    submit_job(client, BASE)
    five = {"base": BASE, "grid": {"training.seed": list(range(5))}}
    assert "5 more would pass its limit of 5" in error_of(client, five, 429)
    assert client.get("/jobs").json()["total"] == 1
    assert client.get("/sweeps").json()["total"] == 0


def test_trials_of_one_shape_train_as_one_stack_each_as_it_would_alone(
    client: TestClient, settings: Settings, db: Database
) -> None:
    base = {**BASE, "training": {**BASE["training"], "validation_fraction": 0.25}}
    grid = {"training.learning_rate": [0.003, 0.03], "training.seed": [0, 1]}
    sweep = submit_sweep(client, {"base": base, "grid": grid})
    assert Worker(settings, db).run_once()  # one claim takes every trial of the shape
    done = client.get(f"/sweeps/{sweep['id']}").json()
    assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 4
    assert client.get("/jobs?status=queued").json()["total"] == 0
    alone_of = {}
    for trial in done["trials"]:
        training = {**base["training"], "learning_rate": trial["params"]["training.learning_rate"]}
        training["seed"] = trial["params"]["training.seed"]
        alone_of[trial["id"]] = submit_job(client, {**base, "training": training})
    train_all(settings, db)
    for trial in done["trials"]:
        stacked = client.get(f"/models/{trial['id']}/loss").json()
        alone = client.get(f"/models/{alone_of[trial['id']]}/loss").json()
        assert stacked["epochs"] == alone["epochs"] == list(range(1, 13))
        np.testing.assert_allclose(stacked["train_loss"], alone["train_loss"], rtol=2e-4)
        np.testing.assert_allclose(stacked["val_loss"], alone["val_loss"], rtol=2e-4)
        metrics = client.get(f"/models/{trial['id']}").json()["metrics"]
        assert metrics["stacked_trials"] == 4
        assert (
            client.get(f"/models/{alone_of[trial['id']]}").json()["metrics"]["stacked_trials"] == 1
        )
        prediction = client.post(f"/models/{trial['id']}/predict", json={"inputs": [[0.5]]})
        assert prediction.status_code == 200
    best = min(done["trials"], key=lambda t: t["val_loss"])
    assert done["best"]["id"] == best["id"] and done["best_by"] == "val_loss"


def test_trials_of_different_shapes_train_in_separate_stacks(
    client: TestClient, settings: Settings, db: Database
) -> None:
    grid = {"model.hidden_layers": [[4], [7]], "training.seed": [0, 1]}
    sweep = submit_sweep(client, {"base": BASE, "grid": grid})
    assert Worker(settings, db).run_once()
    counts = client.get(f"/sweeps/{sweep['id']}").json()["counts"]
    assert counts["succeeded"] == 2 and counts["queued"] == 2  # one shape per claim
    train_all(settings, db)
    done = client.get(f"/sweeps/{sweep['id']}").json()
    assert done["status"] == "succeeded"
    for trial in done["trials"]:
        model = client.get(f"/models/{trial['id']}").json()
        assert model["architecture"]["hidden_layers"] == trial["params"]["model.hidden_layers"]
        assert model["metrics"]["stacked_trials"] == 2


def test_a_diverging_trial_fails_alone(
    client: TestClient, settings: Settings, db: Database
) -> None:
    base = {**BASE, "training": {**BASE["training"], "optimizer": "sgd", "momentum": 0.0}}
    grid = {"training.learning_rate": [0.05, 1e30, 0.1]}
    sweep = submit_sweep(client, {"base": base, "grid": grid})
    train_all(settings, db)
    done = client.get(f"/sweeps/{sweep['id']}").json()
    assert [t["status"] for t in done["trials"]] == ["succeeded", "failed", "succeeded"]
    assert "diverged" in done["trials"][1]["error"]
    assert done["status"] == "succeeded" and done["best"]["id"] != done["trials"][1]["id"]
    assert done["best_by"] == "train_loss"


def test_cancelling_and_deleting_a_sweep(
    client: TestClient, settings: Settings, db: Database
) -> None:
    sweep = submit_sweep(client, {"base": BASE, "grid": {"training.seed": [0, 1, 2]}})
    cancelled = client.post(f"/sweeps/{sweep['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["counts"]["cancelled"] == 3
    assert not Worker(settings, db).run_once()  # nothing left to train
    assert client.delete(f"/sweeps/{sweep['id']}").status_code == 204
    assert client.get(f"/sweeps/{sweep['id']}").status_code == 404
    for trial in sweep["trials"]:
        assert client.get(f"/jobs/{trial['id']}").status_code == 404

    trained = submit_sweep(client, {"base": BASE, "grid": {"training.seed": [0, 1]}})
    queued = submit_sweep(client, {"base": BASE, "grid": {"model.hidden_layers": [[3]]}})
    assert "cancel it" in client.delete(f"/sweeps/{queued['id']}").json()["detail"]
    train_all(settings, db)
    model_id = trained["trials"][0]["id"]
    assert client.get(f"/models/{model_id}").status_code == 200
    assert client.delete(f"/sweeps/{trained['id']}").status_code == 204
    assert client.get(f"/models/{model_id}").status_code == 404
    assert client.get("/jobs").json()["total"] == 1  # the other sweep's trial
    assert client.post("/sweeps/nope/cancel").status_code == 404
    assert client.delete("/sweeps/nope").status_code == 404


def test_a_replayed_sweep_with_its_idempotency_key_queues_nothing_new(
    client: TestClient, settings: Settings, db: Database
) -> None:
    body = {"base": BASE, "grid": {"training.seed": [0, 1]}}
    key = {"Idempotency-Key": "sweep-1"}
    first = client.post("/sweeps", json=body, headers=key)
    again = client.post("/sweeps", json=body, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert client.get("/jobs").json()["total"] == 2
    other = {"base": BASE, "grid": {"training.seed": [5]}}
    assert "different request body" in client.post("/sweeps", json=other, headers=key).text
    blank = client.post("/sweeps", json=body, headers={"Idempotency-Key": " "})
    assert blank.status_code == 422 and "must not be blank" in blank.json()["detail"]

    train_all(settings, db)
    ended = client.post(f"/sweeps/{first.json()['id']}/cancel")
    assert ended.status_code == 409 and "already ended" in ended.json()["detail"]
    assert client.get(f"/sweeps/{first.json()['id']}").json()["status"] == "succeeded"


def test_a_classification_sweep_over_an_uploaded_dataset(
    client: TestClient, settings: Settings, db: Database
) -> None:
    """Trials that reference a dataset store no data of their own; labels come back as the
    dataset's, and each trial predicts them."""
    rows = [(a / 5, b / 5) for a in range(-5, 6) for b in range(-5, 6)]
    csv = "x1,x2,side\n" + "\n".join(f"{a},{b},{'left' if a < b else 'right'}" for a, b in rows)
    dataset = client.post(
        "/datasets", params={"target": "side"}, content=csv, headers={"Content-Type": "text/csv"}
    ).json()
    base = {
        "task": "classification",
        "dataset_id": dataset["id"],
        "model": {"hidden_layers": [8]},
        "training": {"epochs": 15, "batch_size": 32, "validation_fraction": 0.2},
    }
    sweep = submit_sweep(
        client,
        {"base": base, "grid": {"training.learning_rate": [0.01, 0.1], "training.seed": [0, 1]}},
    )
    train_all(settings, db)
    done = client.get(f"/sweeps/{sweep['id']}").json()
    assert done["status"] == "succeeded" and done["best_by"] == "val_loss"
    for trial in done["trials"]:
        model = client.get(f"/models/{trial['id']}").json()
        assert model["classes"] == ["left", "right"] and model["metrics"]["stacked_trials"] == 4
        assert model["feature_names"] == ["x1", "x2"]
        predicted = client.post(f"/models/{trial['id']}/predict", json={"inputs": [[-1, 1]]})
        assert predicted.json()["predictions"][0] in ("left", "right")
        assert client.get(f"/jobs/{trial['id']}").json()["dataset_id"] == dataset["id"]
    best = done["best"]["id"]
    answer = client.post(f"/models/{best}/predict", json={"inputs": [[-1, 1], [1, -1]]})
    assert answer.json()["predictions"] == ["left", "right"]


def test_a_trial_names_its_sweep_and_jobs_filter_by_sweep(client: TestClient) -> None:
    sweep = submit_sweep(client, {"base": BASE, "grid": {"training.seed": [3, 4]}})
    submit_job(client, BASE)
    trial = client.get(f"/jobs/{sweep['trials'][1]['id']}").json()
    assert trial["sweep_id"] == sweep["id"] and trial["trial_params"] == {"training.seed": 4}
    listed = client.get("/jobs", params={"sweep_id": sweep["id"]}).json()
    assert listed["total"] == 2
    assert {job["id"] for job in listed["jobs"]} == {t["id"] for t in sweep["trials"]}
    alone = [job for job in client.get("/jobs").json()["jobs"] if job["sweep_id"] is None]
    assert len(alone) == 1 and alone[0]["trial_params"] is None


def test_every_trial_s_loss_curve_in_one_answer(
    client: TestClient, settings: Settings, db: Database
) -> None:
    base = {**BASE, "training": {**BASE["training"], "epochs": 30, "validation_fraction": 0.25}}
    sweep = submit_sweep(client, {"base": base, "grid": {"training.seed": [0, 1, 2]}})
    queued = client.get(f"/sweeps/{sweep['id']}/loss").json()
    assert [t["id"] for t in queued["trials"]] == [t["id"] for t in sweep["trials"]]
    assert all(t["epochs"] == [] and t["status"] == "queued" for t in queued["trials"])
    train_all(settings, db)
    curves = client.get(f"/sweeps/{sweep['id']}/loss").json()["trials"]
    for curve in curves:
        alone = client.get(f"/models/{curve['id']}/loss").json()
        assert {k: v for k, v in curve.items() if k != "next_from_epoch"} == {
            k: v for k, v in alone.items() if k != "next_from_epoch"
        }
    thinned = client.get(f"/sweeps/{sweep['id']}/loss", params={"max_points": 6}).json()
    assert all(len(t["epochs"]) <= 6 for t in thinned["trials"])
    assert client.get("/sweeps/nope/loss").status_code == 404
    assert client.get(f"/sweeps/{sweep['id']}/loss", params={"max_points": 1}).status_code == 422
