"""A model's quality measures: computed right (by hand here), in raw target units, stored with
the model, and what GET /models sorts by on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from service.api.app import create_asgi_app
from service.api.model_order import SORTABLE_METRICS
from service.config import Settings
from service.storage.db import Database
from service.training import evaluation
from service.training.data import prepare
from service.training.evaluation import evaluation_rows, model_quality
from service.training.metrics import classification_quality, regression_quality
from service.training.network import NetworkConfig, build_network
from service.training.worker import Worker
from tests.databases import BACKENDS, migrated_database

CPU = torch.device("cpu")


# --- the measures, against hand-computed values ---


def test_regression_measures_match_hand_computed_values() -> None:
    # Errors 0, 0, 0, 1 around a mean of 2.5: SS_res 1, SS_tot 5.
    measures = regression_quality(
        "val", np.array([[1.0], [2], [3], [4]]), np.array([[1.0], [2], [3], [5]])
    )
    assert measures == pytest.approx({"val_r2": 0.8, "val_rmse": 0.5, "val_mae": 0.25})


def test_several_outputs_are_averaged_uniformly() -> None:
    targets = np.array([[1.0, 0], [2, 0], [3, 2], [4, 2]])
    predictions = np.array([[1.0, 0], [2, 0], [3, 2], [5, 2]])  # the second output is exact
    measures = regression_quality("train", targets, predictions)
    assert measures == pytest.approx({"train_r2": 0.9, "train_rmse": 0.25, "train_mae": 0.125})


def test_undefined_regression_measures_are_none_not_nan() -> None:
    one_row = regression_quality("val", np.array([[2.0]]), np.array([[3.0]]))
    assert one_row == {"val_r2": None, "val_rmse": 1.0, "val_mae": 1.0}  # R² needs two rows
    assert regression_quality("val", None, None) == dict.fromkeys(["val_r2", "val_rmse", "val_mae"])
    overflowed = regression_quality("val", np.ones((3, 1)), np.array([[1.0], [np.inf], [2]]))
    assert set(overflowed.values()) == {None}


def test_classification_measures_match_hand_computed_values() -> None:
    targets = np.array([0, 1, 2, 2])
    probabilities = np.array(
        [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]
    )  # the last row is predicted 0 but is a 2
    measures = classification_quality("val", targets, probabilities)
    assert measures["val_accuracy"] == 0.75
    expected_log_loss = -(math.log(0.7) + math.log(0.8) + math.log(0.5) + math.log(0.2)) / 4
    assert measures["val_log_loss"] == pytest.approx(expected_log_loss)
    # Rows: the true class; columns: the predicted one.
    assert measures["val_confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]


def test_a_split_missing_some_classes_is_scored_against_all_of_them() -> None:
    measures = classification_quality("val", np.array([0, 0]), np.array([[0.5, 0.25, 0.25]] * 2))
    assert measures["val_accuracy"] == 1.0
    assert measures["val_log_loss"] == pytest.approx(-math.log(0.5))
    assert measures["val_confusion_matrix"] == [[2, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_confusion_matrices_of_very_many_classes_are_left_out() -> None:
    n_classes = 101
    probabilities = np.full((2, n_classes), 1 / n_classes)
    measures = classification_quality("train", np.array([0, 1]), probabilities)
    assert measures["train_confusion_matrix"] is None
    assert measures["train_accuracy"] == 0.5


def test_large_splits_are_scored_on_evenly_spaced_rows() -> None:
    assert evaluation_rows(5, 10).tolist() == [0, 1, 2, 3, 4]
    rows = evaluation_rows(1000, 10)
    assert len(set(rows.tolist())) == 10 and rows[0] == 0 and rows[-1] == 999
    assert np.all(np.diff(rows) >= 100) and rows.tolist() == evaluation_rows(1000, 10).tolist()


# --- the final network's quality on its own rows ---


def linear_model(x: np.ndarray, y: np.ndarray, offset: float) -> dict[str, Any]:
    """The quality of a 1 -> 1 linear network set to predict `y = 3x + 5 + offset` exactly,
    trained (nominally) with scaled targets and a validation split."""
    prepared = prepare(
        x,
        y,
        classification=False,
        scale_inputs=False,
        scale_targets=True,
        validation_fraction=0.25,
        seed=0,
        device=CPU,
    )
    scaler = prepared.target_scaler
    assert scaler is not None
    mean, scale = float(scaler.mean[0]), float(scaler.scale[0])
    config = NetworkConfig(1, (), 1, "tanh", None)
    state = {
        "0.weight": torch.tensor([[3.0 / scale]]),
        "0.bias": torch.tensor([(5.0 + offset - mean) / scale]),
    }
    return model_quality(config, state, prepared, classes=None)


def test_quality_is_measured_in_raw_target_units() -> None:
    x = np.linspace(-2, 2, 40).reshape(-1, 1)
    y = 3 * x + 5
    exact = linear_model(x, y, offset=0.0)
    assert exact["train_r2"] == pytest.approx(1.0) and exact["val_r2"] == pytest.approx(1.0)
    assert exact["train_rmse"] == pytest.approx(0.0, abs=1e-5)
    # Off by 0.5 in the targets' own units, whatever the target scaler's scale (~3.5 here).
    off = linear_model(x, y, offset=0.5)
    for split in ("train", "val"):
        assert off[f"{split}_mae"] == pytest.approx(0.5, rel=1e-5)
        assert off[f"{split}_rmse"] == pytest.approx(0.5, rel=1e-5)
    assert (off["train_rows"], off["val_rows"]) == (30, 10)
    assert (off["train_rows_evaluated"], off["val_rows_evaluated"]) == (30, 10)


def test_a_split_above_the_row_limit_is_scored_on_a_sample_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(evaluation, "MAX_EVALUATED_ROWS", 12)
    x = np.linspace(-2, 2, 40).reshape(-1, 1)
    quality = linear_model(x, 3 * x + 5, offset=0.5)
    assert (quality["train_rows"], quality["train_rows_evaluated"]) == (30, 12)
    assert (quality["val_rows"], quality["val_rows_evaluated"]) == (10, 10)
    assert quality["train_mae"] == pytest.approx(0.5, rel=1e-5)


def test_a_classifier_is_scored_with_its_labels_order() -> None:
    x = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    prepared = prepare(
        x,
        np.array([0, 0, 1, 1]),
        classification=True,
        scale_inputs=False,
        scale_targets=False,
        validation_fraction=0.0,
        seed=0,
        device=CPU,
    )
    config = NetworkConfig(1, (), 2, "tanh", None)
    network = build_network(config)  # logits (-x, x): class 1 for positive inputs
    state = {"0.weight": torch.tensor([[-1.0], [1.0]]), "0.bias": torch.zeros(2)}
    network.load_state_dict(state)
    quality = model_quality(config, state, prepared, classes=["neg", "pos"])
    assert quality["train_accuracy"] == 1.0
    assert quality["train_confusion_matrix"] == [[2, 0], [0, 2]]
    assert quality["confusion_matrix_labels"] == ["neg", "pos"]
    # p(true class) is sigmoid(2|x|): 1/(1+e^-4) twice and 1/(1+e^-2) twice.
    expected = (math.log1p(math.exp(-4)) + math.log1p(math.exp(-2))) / 2
    assert quality["train_log_loss"] == pytest.approx(expected, rel=1e-6)
    assert (quality["val_accuracy"], quality["val_confusion_matrix"]) == (None, None)


# --- stored with the model, and sorted by ---

GRID = [[i / 10] for i in range(-20, 20)]


def regression_job(epochs: int, learning_rate: float) -> dict[str, Any]:
    return {
        "data": {"x": GRID, "y": [[0.5 * x[0] ** 2] for x in GRID]},
        "model": {"hidden_layers": [8], "output_activation": None},
        "training": {
            "epochs": epochs,
            "batch_size": 10,
            "learning_rate": learning_rate,
            "validation_fraction": 0.25,
        },
        "preprocessing": {"targets": "standard"},
    }


CLASSIFICATION_JOB = {
    "task": "classification",
    "data": {"x": GRID, "y": ["low" if x[0] < 0 else "high" for x in GRID]},
    "training": {"epochs": 30, "batch_size": 10},
}


def train(client: TestClient, settings: Settings, db: Database, job: dict[str, Any]) -> str:
    response = client.post("/jobs", json=job)
    assert response.status_code == 202, response.text
    assert Worker(settings, db).run_once()
    job_id: str = response.json()["id"]
    assert client.get(f"/jobs/{job_id}").json()["status"] == "succeeded"
    return job_id


def test_a_trained_model_reports_its_quality(
    client: TestClient, settings: Settings, db: Database
) -> None:
    regressor = client.get(f"/models/{train(client, settings, db, regression_job(40, 0.05))}")
    metrics = regressor.json()["metrics"]
    for split in ("train", "val"):
        assert metrics[f"{split}_rmse"] > 0 and metrics[f"{split}_mae"] > 0
        assert -1 < metrics[f"{split}_r2"] <= 1
    assert (metrics["train_rows"], metrics["val_rows"]) == (30, 10)
    assert "train_accuracy" not in metrics

    classifier = client.get(f"/models/{train(client, settings, db, CLASSIFICATION_JOB)}").json()
    metrics = classifier["metrics"]
    assert 0.5 <= metrics["train_accuracy"] <= 1 and metrics["train_log_loss"] > 0
    assert metrics["confusion_matrix_labels"] == classifier["classes"]
    matrix = metrics["train_confusion_matrix"]
    # One row per true class, in the classes' order: 20 "low" and 20 "high" rows.
    low, high = classifier["classes"].index("low"), classifier["classes"].index("high")
    assert (sum(matrix[low]), sum(matrix[high])) == (20, 20)
    assert metrics["val_accuracy"] is None and metrics["val_confusion_matrix"] is None


def test_every_number_in_a_model_s_metrics_is_sortable(
    client: TestClient, settings: Settings, db: Database
) -> None:
    numeric = set()
    for job in (regression_job(2, 0.01), CLASSIFICATION_JOB):
        metrics = client.get(f"/models/{train(client, settings, db, job)}").json()["metrics"]
        numeric |= {
            name for name, value in metrics.items() if type(value) in (int, float) or value is None
        }
    numeric -= {"confusion_matrix_labels", "train_confusion_matrix", "val_confusion_matrix"}
    assert numeric <= set(SORTABLE_METRICS)


@pytest.fixture(params=BACKENDS)
def any_backend(
    request: pytest.FixtureRequest, settings: Settings, database_url: str
) -> Iterator[tuple[TestClient, Settings, Database]]:
    with migrated_database(request.param, database_url) as database:
        url = database.engine.url.render_as_string(hide_password=False)
        backend_settings = settings.model_copy(update={"database_url": url})
        with TestClient(create_asgi_app(backend_settings)) as client:
            yield client, backend_settings, database


def test_models_sort_by_a_metric_with_those_lacking_it_last(
    any_backend: tuple[TestClient, Settings, Database],
) -> None:
    client, settings, db = any_backend
    regressors = [
        train(client, settings, db, regression_job(e, lr))
        for e, lr in ((3, 0.001), (60, 0.05), (15, 0.02))
    ]
    classifier = train(client, settings, db, CLASSIFICATION_JOB)

    def listed(sort: str) -> list[str]:
        response = client.get("/models", params={"sort": sort})
        assert response.status_code == 200, response.text
        return [model["id"] for model in response.json()["models"]]

    val_r2 = {
        job_id: client.get(f"/models/{job_id}").json()["metrics"]["val_r2"] for job_id in regressors
    }
    best_first = sorted(regressors, key=lambda job_id: -val_r2[job_id])
    assert len(set(val_r2.values())) == 3
    assert listed("-val_r2") == [*best_first, classifier]
    assert listed("val_r2") == [*reversed(best_first), classifier]
    assert listed("-train_accuracy")[0] == classifier  # the one model that has it, first
    assert listed("created_at") == [*regressors, classifier]
    assert (
        listed("-created_at")
        == listed("created_at")[::-1]
        == [model["id"] for model in client.get("/models").json()["models"]]
    )
    page = client.get("/models", params={"sort": "-val_r2", "limit": 2, "offset": 1}).json()
    assert [model["id"] for model in page["models"]] == best_first[1:3]


@pytest.mark.parametrize("sort", ["val_accuracy_", "stop_reason", "--val_r2", "-", ""])
def test_an_unknown_sort_is_a_422_naming_the_choices(client: TestClient, sort: str) -> None:
    response = client.get("/models", params={"sort": sort})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    assert "sort" in body["detail"] and "val_r2" in body["detail"]
