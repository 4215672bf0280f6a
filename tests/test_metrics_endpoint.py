"""GET /metrics: what an operator's Prometheus scrapes, and who may read it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service import fleet
from service.api.app import create_asgi_app
from service.config import Settings
from service.storage.db import Database
from service.training.worker import Worker

JOB = {
    "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": [[0.0], [0.3], [0.6], [0.9]]},
    "training": {"epochs": 2, "batch_size": 2},
}
ADMIN, USER = "admin-key-for-metrics", "user-key-for-metrics"
PREDICT = "/models/{model_id}/predict"


def sample(client: TestClient, name: str, **labels: str) -> float:
    """The value of one sample of the scrape; 0 when it is absent."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def trained(client: TestClient, settings: Settings, db: Database) -> str:
    job_id: str = client.post("/jobs", json=JOB).json()["id"]
    assert Worker(settings, db).run_once()
    return job_id


def test_predictions_are_counted_by_route_template_with_their_latency(
    client: TestClient, settings: Settings, db: Database
) -> None:
    model_id = trained(client, settings, db)
    requests = sample(client, "service_http_requests_total", route=PREDICT, status="200")
    latencies = sample(client, "service_predict_latency_seconds_count", route=PREDICT)
    hits = sample(client, "service_predictor_cache_lookups_total", result="hit")
    misses = sample(client, "service_predictor_cache_lookups_total", result="miss")
    batches = sample(client, "service_predict_batch_requests_count")

    for _ in range(3):  # the first loads the model through the route, the rest take the fast path
        body = {"inputs": [[1.0], [2.0]]}
        assert client.post(f"/models/{model_id}/predict", json=body).status_code == 200
    assert client.post("/models/no-such-model/predict", json=body).status_code == 404

    assert sample(client, "service_http_requests_total", route=PREDICT, status="200") == (
        requests + 3
    )
    assert sample(client, "service_http_requests_total", route=PREDICT, status="404") >= 1
    assert sample(client, "service_predict_latency_seconds_count", route=PREDICT) == latencies + 4
    assert sample(client, "service_predictor_cache_lookups_total", result="miss") == misses + 2
    assert sample(client, "service_predictor_cache_lookups_total", result="hit") >= hits + 2
    assert sample(client, "service_predict_batch_requests_count") == batches + 3


def test_open_inference_requests_are_counted_under_their_own_route(
    client: TestClient, settings: Settings, db: Database
) -> None:
    model_id = trained(client, settings, db)
    infer = "/v2/models/{model_id}/infer"
    before = sample(client, "service_http_requests_total", route=infer, status="200")
    tensor = {"name": "inputs", "shape": [2, 1], "datatype": "FP64", "data": [1.0, 2.0]}
    for _ in range(3):  # the model loads through the route, then the fast path answers
        response = client.post(f"/v2/models/{model_id}/infer", json={"inputs": [tensor]})
        assert response.status_code == 200, response.text
    assert sample(client, "service_http_requests_total", route=infer, status="200") == before + 3
    assert sample(client, "service_predict_latency_seconds_count", route=infer) >= 3


def test_paths_are_labelled_by_template_never_by_raw_path(client: TestClient) -> None:
    before = sample(client, "service_http_requests_total", route="unmatched", status="404")
    assert client.get("/no/such/path/abc123").status_code == 404
    assert client.get("/jobs/some-unknown-id").status_code == 404
    text = client.get("/metrics").text
    assert "abc123" not in text and "some-unknown-id" not in text
    assert sample(client, "service_http_requests_total", route="unmatched", status="404") == (
        before + 1
    )
    assert sample(client, "service_http_requests_total", route="/jobs/{job_id}", status="404") >= 1


def test_the_queue_running_jobs_and_durations_are_read_from_the_database(
    client: TestClient, settings: Settings, db: Database
) -> None:
    assert sample(client, "service_jobs", status="queued") == 0
    job_id = client.post("/jobs", json=JOB).json()["id"]
    assert sample(client, "service_jobs", status="queued") == 1
    assert sample(client, "service_jobs_running") == 0
    assert Worker(settings, db).run_once()
    assert sample(client, "service_jobs", status="queued") == 0
    assert sample(client, "service_jobs", status="succeeded") == 1
    assert sample(client, "service_recent_jobs_finished", status="succeeded") == 1
    longest = sample(
        client, "service_recent_job_duration_seconds", status="succeeded", quantile="1.0"
    )
    assert 0 <= longest < 60
    assert client.get(f"/jobs/{job_id}").json()["status"] == "succeeded"


def test_each_live_worker_reports_its_heartbeat_age(client: TestClient, db: Database) -> None:
    fleet.register(db, "host-a:1:x", "host-a", ["cpu"], "numpy")
    assert sample(client, "service_workers_live") == 1
    age = sample(client, "service_worker_heartbeat_age_seconds", worker="host-a:1:x")
    assert 0 <= age < 5
    fleet.unregister(db, "host-a:1:x")
    assert sample(client, "service_workers_live") == 0


@pytest.fixture
def keyed(settings: Settings, db: Database, tmp_path: Path) -> Iterator[TestClient]:
    update = {"api_keys": USER, "admin_keys": ADMIN, "data_dir": str(tmp_path / "data")}
    with TestClient(create_asgi_app(settings.model_copy(update=update))) as client:
        yield client


def test_with_keys_on_only_admin_keys_read_metrics(keyed: TestClient) -> None:
    assert keyed.get("/metrics").status_code == 401
    refused = keyed.get("/metrics", headers={"Authorization": f"Bearer {USER}"})
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    scrape = keyed.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert scrape.status_code == 200
    # The gate's refusal, answered before routing, still counts under the route it was for.
    assert 'service_http_requests_total{route="/metrics",status="401"}' in scrape.text
