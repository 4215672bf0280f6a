"""Watching a real deployment: two API processes on one host share their counts through
PROMETHEUS_MULTIPROC_DIR, every replica reports the same fleet state from the database, and
any replica draws a model's plots."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.storage.migrate import upgrade
from tests.support import ServiceProcess, wait_for_job

JOB = {
    "name": "observed",
    "data": {
        "x": [[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 3.0]],
        "y": [[0.0], [0.3], [0.6], [0.9]],
    },
    "training": {"epochs": 20, "batch_size": 2},
}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`serve` (an API and a worker) and a second `api`, on one database and one metrics dir."""
    folder = tmp_path_factory.mktemp("observed")
    metrics_dir = folder / "metrics"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    url = f"sqlite:///{folder / 'service.db'}"
    upgrade(url)  # before both start, so they start side by side
    first = ServiceProcess(url, log_path=folder / "serve.log", env=env)
    second = ServiceProcess(url, "api", log_path=folder / "api.log", env=env)
    try:
        with ThreadPoolExecutor(2) as starting:
            for started in [starting.submit(p.start) for p in (first, second)]:
                started.result()
        yield first.url, second.url
    finally:
        assert second.stop() == 0, second.log_tail()
        assert first.stop() == 0, first.log_tail()


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(f"{url}/metrics", timeout=10.0)
    assert response.status_code == 200, response.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_one_replica_reports_what_another_counted_and_the_fleet_it_shares(
    replicas: tuple[str, str],
) -> None:
    first, second = replicas
    with httpx.Client(base_url=first, timeout=30.0) as api:
        job_id = api.post("/jobs", json=JOB).raise_for_status().json()["id"]
        assert wait_for_job(api, job_id)["status"] == "succeeded"
        for _ in range(5):  # the first loads the model; the rest the fast path answers
            api.post(f"/models/{job_id}/predict", json={"inputs": [[1.0, 2.0]]}).raise_for_status()

    samples = scrape(second)
    predict = "/models/{model_id}/predict"
    assert value(samples, "service_http_requests_total", route=predict, status="200") == 5
    assert value(samples, "service_predict_latency_seconds_count", route=predict) == 5
    assert value(samples, "service_predict_batch_requests_sum") == 5
    assert value(samples, "service_jobs", status="succeeded") == 1
    assert value(samples, "service_jobs", status="queued") == 0
    assert value(samples, "service_workers_live") == 1
    assert value(samples, "service_recent_jobs_finished", status="succeeded") == 1

    with httpx.Client(base_url=second, timeout=30.0) as other:
        loss = other.get(f"/models/{job_id}/loss.png")
        assert loss.status_code == 200 and loss.headers["content-type"] == "image/png"
        surface = other.get(f"/models/{job_id}/surface.png")
        assert surface.status_code == 200 and surface.content.startswith(b"\x89PNG")
        thinned = other.get(f"/models/{job_id}/loss", params={"max_points": 4}).json()
        assert 2 <= len(thinned["epochs"]) <= 4 and thinned["epochs"][-1] == 20
