"""Cancel means cancel: an accepted cancel ends the job cancelled, a late one is a 409."""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi.testclient import TestClient

from service.config import Settings
from service.storage import queue
from service.storage.db import Database
from service.training.worker import Worker
from tests.support import placeholder_model, submit_job

TINY: dict[str, Any] = {
    "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": [[0.0], [0.3], [0.6], [0.9]]},
    "model": {"hidden_layers": [4]},
    "training": {"epochs": 3, "batch_size": 2},
}


def submit(client: TestClient, body: dict[str, Any] = TINY) -> str:
    return submit_job(client, body)


def test_a_cancel_accepted_while_the_job_runs_wins_over_its_finish(
    client: TestClient, db: Database
) -> None:
    job_id = submit(client)
    assert queue.claim(db, "w1", 30) == job_id
    accepted = client.post(f"/jobs/{job_id}/cancel")
    assert accepted.status_code == 200 and accepted.json()["cancel_requested"]
    # The worker finishes before it noticed: the cancel still wins, and no model is stored.
    model = placeholder_model(job_id)
    assert queue.finish_succeeded(db, job_id, "w1", model, [], None) == "cancelled"
    assert client.get(f"/jobs/{job_id}").json()["status"] == "cancelled"
    predict = client.post(f"/models/{job_id}/predict", json={"inputs": [[1.0]]})
    assert predict.status_code == 409
    assert client.get("/models").json()["models"] == []


def test_a_cancel_after_the_job_finished_is_a_409(
    client: TestClient, settings: Settings, db: Database
) -> None:
    job_id = submit(client)
    assert Worker(settings, db).run_once()
    late = client.post(f"/jobs/{job_id}/cancel")
    assert late.status_code == 409
    assert late.json()["detail"] == f"job {job_id} already succeeded; there is nothing to cancel"
    assert client.get(f"/jobs/{job_id}").json()["status"] == "succeeded"


def test_a_running_job_stops_long_before_its_next_heartbeat(
    client: TestClient, settings: Settings, db: Database
) -> None:
    slow_beats = settings.model_copy(update={"heartbeat_seconds": 60.0, "lease_seconds": 120.0})
    job_id = submit(client, {**TINY, "training": {"epochs": 100_000, "batch_size": 1}})
    worker = threading.Thread(target=Worker(slow_beats, db).run_once)
    worker.start()
    deadline = time.monotonic() + 30
    while client.get(f"/jobs/{job_id}").json()["epoch"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
    # Within a heartbeat (60 s) the worker would stop anyway; it must stop far sooner.
    worker.join(timeout=15)
    assert not worker.is_alive()
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["epoch"] < 100_000
    assert client.get(f"/models/{job_id}/loss").json()["epochs"] == list(range(1, job["epoch"] + 1))
