"""Bad input gets a clear 4xx with {"error", "detail"}, and nothing is stored from it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.storage.db import Database
from service.training.worker import Worker

GOOD: dict[str, Any] = {
    "data": {
        "x": [[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]],
        "y": [[0.1], [0.2], [0.3], [0.4]],
    },
    "training": {"epochs": 3, "batch_size": 2},
}
LABELS: dict[str, Any] = {
    "task": "classification",
    "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": ["a", "b", "a", "b"]},
    "training": {"epochs": 3},
}


def variant(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return body


BAD_JOBS = {
    "ragged rows": variant(GOOD, "data.x", [[0.0, 1.0], [1.0], [2.0, 2.0], [3.0, 1.0]]),
    "x and y lengths differ": variant(GOOD, "data.y", [[0.1], [0.2]]),
    "empty data": variant(GOOD, "data", {"x": [], "y": []}),
    "empty row": variant(GOOD, "data.x", [[], [], [], []]),
    "ragged y": variant(GOOD, "data.y", [[0.1], [0.2, 0.3], [0.3], [0.4]]),
    "non-numeric x": variant(GOOD, "data.x", [["a", 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]]),
    "null in x": variant(GOOD, "data.x", [[None, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]]),
    "beyond float32": variant(GOOD, "data.x", [[1e39, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]]),
    "unknown top-level field": variant(GOOD, "colour", "blue"),
    "unknown training field": variant(GOOD, "training.epochz", 3),
    "unknown model field": variant(GOOD, "model.dropout", 0.5),
    "unknown activation": variant(GOOD, "model.activation", "swishy"),
    "unknown optimizer": variant(GOOD, "training.optimizer", "lbfgs"),
    "unknown loss": variant(GOOD, "training.loss", "hinge"),
    "unknown task": variant(GOOD, "task", "clustering"),
    "zero epochs": variant(GOOD, "training.epochs", 0),
    "negative epochs": variant(GOOD, "training.epochs", -5),
    "zero batch size": variant(GOOD, "training.batch_size", 0),
    "zero learning rate": variant(GOOD, "training.learning_rate", 0),
    "negative learning rate": variant(GOOD, "training.learning_rate", -0.1),
    "zero-width layer": variant(GOOD, "model.hidden_layers", [0]),
    "validation fraction 1": variant(GOOD, "training.validation_fraction", 1.0),
    "validation leaves no rows": variant(GOOD, "training.validation_fraction", 0.05),
    "patience without validation": variant(GOOD, "training.early_stopping_patience", 3),
    "cross entropy for regression": variant(GOOD, "training.loss", "cross_entropy"),
    "string targets for regression": variant(GOOD, "data.y", ["a", "b", "c", "d"]),
    "one class only": variant(LABELS, "data.y", ["a", "a", "a", "a"]),
    "float labels": variant(LABELS, "data.y", [0.5, 1.5, 0.5, 1.5]),
    "mixed label types": variant(LABELS, "data.y", ["a", 1, "a", 1]),
    "label rows": variant(LABELS, "data.y", [[0], [1], [0], [1]]),
    "mse for classification": variant(LABELS, "training.loss", "mse"),
    "output activation for classification": variant(LABELS, "model.output_activation", "tanh"),
    "target scaling for classification": variant(LABELS, "preprocessing.targets", "standard"),
    "too many epochs": variant(GOOD, "training.epochs", 10**9),
    "too wide": variant(GOOD, "model.hidden_layers", [10**6]),
    "too few feature names": variant(GOOD, "data.feature_names", ["a"]),
    "repeated feature names": variant(GOOD, "data.feature_names", ["a", "a"]),
    "empty feature name": variant(GOOD, "data.feature_names", ["a", ""]),
    "a string body": "just a string",
    "a list body": [GOOD],
}


def assert_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail"}
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def assert_nothing_stored(client: TestClient) -> None:
    assert client.get("/jobs").json()["total"] == 0


@pytest.mark.parametrize("body", BAD_JOBS.values(), ids=BAD_JOBS.keys())
def test_bad_job_is_refused_and_nothing_is_stored(client: TestClient, body: Any) -> None:
    assert_error(client.post("/jobs", json=body), 422)
    assert_nothing_stored(client)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused(client: TestClient, literal: str) -> None:
    raw = json.dumps(GOOD).replace("0.1", literal, 1)
    assert literal in raw
    response = client.post("/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert "finite" in assert_error(response, 422)["detail"]
    assert_nothing_stored(client)


def test_error_detail_names_the_place_of_the_problem(client: TestClient) -> None:
    body = variant(GOOD, "data.x", [[0.0, 1.0], [1.0, "x"], [2.0, 2.0], [3.0, 1.0]])
    detail = assert_error(client.post("/jobs", json=body), 422)["detail"]
    assert "data.x[1][1]" in detail


def test_malformed_json_is_a_422(client: TestClient) -> None:
    response = client.post(
        "/jobs", content=b'{"data": {"x": [[1.0]', headers={"Content-Type": "application/json"}
    )
    assert "not valid JSON" in assert_error(response, 422)["detail"]
    assert_nothing_stored(client)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_declared_json_is_a_415(
    client: TestClient, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/jobs", content=json.dumps(GOOD), headers=headers)
    assert "application/json" in assert_error(response, 415)["detail"]
    assert_nothing_stored(client)


def test_batch_size_larger_than_the_data_is_clipped_with_a_warning(client: TestClient) -> None:
    response = client.post("/jobs", json=variant(GOOD, "training.batch_size", 1000))
    assert response.status_code == 202
    job = response.json()
    assert job["spec"]["training"]["batch_size"] == 4
    assert any("clipped to 4" in warning for warning in job["warnings"])


def test_defaults_are_the_notebook_settings(client: TestClient) -> None:
    job = client.post("/jobs", json={"data": GOOD["data"]}).json()
    assert job["spec"]["model"] == {
        "hidden_layers": [80],
        "activation": "tanh",
        "output_activation": "tanh",
    }
    training = job["spec"]["training"]
    assert (
        training["optimizer"],
        training["learning_rate"],
        training["epochs"],
        training["loss"],
    ) == ("adam", 0.01, 400, "mse")
    assert job["spec"]["preprocessing"] == {"inputs": "standard", "targets": "none"}


def test_classification_resolves_its_own_defaults(client: TestClient) -> None:
    job = client.post("/jobs", json=LABELS).json()
    assert job["spec"]["model"]["output_activation"] is None
    assert job["spec"]["training"]["loss"] == "cross_entropy"


def test_submission_answers_202_with_location(client: TestClient) -> None:
    response = client.post("/jobs", json=GOOD)
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued" and job["epoch"] == 0 and job["epochs"] == 3
    assert client.get(response.headers["location"]).json()["id"] == job["id"]


@pytest.mark.parametrize("path", ["/jobs/nope", "/models/nope", "/models/nope/loss"])
def test_unknown_ids_are_404(client: TestClient, path: str) -> None:
    assert assert_error(client.get(path), 404)["error"] == "not_found"


def test_unknown_routes_and_methods_use_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/nowhere"), 404)
    assert_error(client.put("/jobs"), 405)
    assert_error(client.get("/jobs/../../etc/passwd"), 404)


def test_predicting_a_model_that_is_not_ready_is_409(client: TestClient) -> None:
    job = client.post("/jobs", json=GOOD).json()
    body = assert_error(
        client.post(f"/models/{job['id']}/predict", json={"inputs": [[1.0, 2.0]]}), 409
    )
    assert body["error"] == "model_not_ready" and "queued" in body["detail"]
    assert assert_error(client.get(f"/models/{job['id']}"), 409)["error"] == "model_not_ready"


def test_list_filters_by_status_and_paginates_newest_first(client: TestClient) -> None:
    ids = [client.post("/jobs", json=GOOD).json()["id"] for _ in range(3)]
    client.post(f"/jobs/{ids[0]}/cancel")
    page = client.get("/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["jobs"]] == [ids[2], ids[1]] and page["total"] == 3
    assert [j["id"] for j in client.get("/jobs", params={"offset": 2}).json()["jobs"]] == [ids[0]]
    cancelled = client.get("/jobs", params={"status": "cancelled"}).json()
    assert [j["id"] for j in cancelled["jobs"]] == [ids[0]]
    assert_error(client.get("/jobs", params={"status": "sleeping"}), 422)
    assert_error(client.get("/jobs", params={"limit": 0}), 422)


def test_deleting_an_active_job_is_refused(client: TestClient) -> None:
    job = client.post("/jobs", json=GOOD).json()
    assert assert_error(client.delete(f"/models/{job['id']}"), 409)["error"] == "conflict"
    client.post(f"/jobs/{job['id']}/cancel")
    assert client.delete(f"/models/{job['id']}").status_code == 204
    assert_error(client.get(f"/jobs/{job['id']}"), 404)


def test_max_runtime_above_the_server_ceiling_is_refused(client: TestClient) -> None:
    body = variant(GOOD, "training.max_runtime_seconds", 10**9)
    assert "max_runtime_seconds" in assert_error(client.post("/jobs", json=body), 422)["detail"]
    assert_nothing_stored(client)


def test_a_job_stops_at_its_max_runtime_and_keeps_its_model(
    client: TestClient, settings: Settings, db: Database
) -> None:
    body = variant(variant(GOOD, "training.epochs", 100_000), "training.max_runtime_seconds", 0.3)
    job = client.post("/jobs", json=body).json()
    assert job["spec"]["training"]["max_runtime_seconds"] == 0.3
    assert Worker(settings, db).run_once()
    done = client.get(f"/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and 0 < done["epoch"] < 100_000
    assert client.get(f"/models/{job['id']}").json()["metrics"]["stop_reason"] == "max_runtime"
    default = client.post("/jobs", json=GOOD).json()
    assert default["spec"]["training"]["max_runtime_seconds"] == settings.max_runtime_seconds


def test_a_job_s_training_data_comes_back_as_a_sample(client: TestClient) -> None:
    x = [[float(i), float(-i)] for i in range(50)]
    body = {"data": {"x": x, "y": [[i / 50] for i in range(50)], "feature_names": ["a", "b"]}}
    job_id = client.post("/jobs", json=body).json()["id"]
    everything = client.get(f"/jobs/{job_id}/data").json()
    assert everything == {
        "x": x,
        "y": [[i / 50] for i in range(50)],
        "feature_names": ["a", "b"],
        "n_rows": 50,
    }
    sample = client.get(f"/jobs/{job_id}/data", params={"max_rows": 7}).json()
    assert len(sample["x"]) == 7 and sample["n_rows"] == 50
    assert all(row in x for row in sample["x"])  # real rows, in their order
    assert sample["x"] == sorted(sample["x"], key=lambda row: row[0])
    assert client.get("/jobs/nope/data").status_code == 404


def test_a_classifier_s_training_data_names_its_labels(client: TestClient) -> None:
    body = {
        "task": "classification",
        "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": ["b", "a", "b", "a"]},
    }
    job_id = client.post("/jobs", json=body).json()["id"]
    assert client.get(f"/jobs/{job_id}/data").json()["y"] == ["b", "a", "b", "a"]
