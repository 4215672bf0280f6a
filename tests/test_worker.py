"""The worker in-process: where a job runs, what its model records, checkpoints it cannot use."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import update

from service import fleet
from service.config import Settings
from service.loss_history import EpochResult
from service.storage import queue
from service.storage.db import Database
from service.storage.models import Job, WorkerRecord, utcnow
from service.storage.store import encode_checkpoint
from service.training.worker import Worker
from tests.support import submit_job

JOB: dict[str, Any] = {
    "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": [[0.0], [0.3], [0.6], [0.9]]},
    "model": {"hidden_layers": [4]},
    "training": {"epochs": 6, "batch_size": 2},
}


def submit(client: TestClient, body: dict[str, Any] = JOB) -> str:
    return submit_job(client, body)


def interrupted_attempt(db: Database, job_id: str, checkpoint: bytes, epochs: int = 3) -> None:
    """An earlier worker trained `epochs` epochs, stored `checkpoint`, and vanished."""
    assert queue.claim(db, "lost-worker", 30) == job_id
    rows = [EpochResult(e, 1.0 / e, None, 0.1 * e) for e in range(1, epochs + 1)]
    assert queue.save_checkpoint(db, job_id, "lost-worker", rows, epochs, checkpoint)
    with db.write() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    assert queue.recover_expired(db) == 1


@pytest.mark.parametrize(
    "metadata",
    [
        {"format_version": 1, "epoch": 3, "seconds": 0.3},  # an older worker's layout
        {"format_version": 99, "epoch": 3, "seconds": 0.3},  # a newer one's
        {"format_version": 2, "epoch": 3, "seconds": 0.3},  # this layout, wrong shapes
    ],
)
def test_a_checkpoint_that_cannot_be_used_restarts_the_job_with_a_warning(
    client: TestClient, settings: Settings, db: Database, metadata: dict[str, Any]
) -> None:
    job_id = submit(client)
    foreign = {"weights.0.weight": torch.zeros(7, 1), "generator_state": torch.zeros(16)}
    interrupted_attempt(db, job_id, encode_checkpoint(foreign, metadata))

    assert Worker(settings, db).run_once()
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["attempts"] == 2
    (warning,) = job["warnings"]
    assert "the checkpoint after epoch 3 could not be used" in warning
    assert "training restarted from epoch 1" in warning
    loss = client.get(f"/models/{job_id}/loss").json()
    assert loss["epochs"] == [1, 2, 3, 4, 5, 6]
    assert loss["train_loss"][:3] != [1.0, 0.5, 1.0 / 3]  # the lost attempt's rows are gone


def test_a_job_records_its_device_and_its_model_the_engine_and_device(
    client: TestClient, settings: Settings, db: Database
) -> None:
    numpy_job, torch_job = submit(client), submit(client)
    assert Worker(settings, db).run_once()
    assert Worker(settings.model_copy(update={"engine": "torch"}), db).run_once()
    for job_id, engine in ((numpy_job, "numpy"), (torch_job, "torch")):
        assert client.get(f"/jobs/{job_id}").json()["device"] == "cpu"
        metrics = client.get(f"/models/{job_id}").json()["metrics"]
        assert (metrics["engine"], metrics["device"]) == (engine, "cpu")


def test_a_job_that_requires_cuda_waits_with_a_warning_while_no_such_worker_is_alive(
    client: TestClient, settings: Settings, db: Database
) -> None:
    cpu_worker = Worker(settings, db)
    fleet.register(db, cpu_worker.worker_id, "here", ["cpu"], "auto")
    job_id = submit(client, {**JOB, "resources": {"device": "cuda"}})
    assert not cpu_worker.run_once()  # not for a CPU worker

    waiting = client.get(f"/jobs/{job_id}").json()
    assert waiting["status"] == "queued" and waiting["spec"]["resources"] == {"device": "cuda"}
    assert waiting["warnings"] == [
        "waiting for a worker with cuda: none is alive; the job stays queued until one starts"
    ]
    listed = client.get("/jobs").json()["jobs"]
    assert listed[0]["warnings"] == waiting["warnings"]

    fleet.register(db, "gpu-box:1", "gpu-box", ["cpu", "cuda:0"], "auto")
    assert client.get(f"/jobs/{job_id}").json()["warnings"] == []
    workers = client.get("/workers").json()["workers"]
    assert [(w["id"], w["devices"]) for w in workers] == [
        (cpu_worker.worker_id, ["cpu"]),
        ("gpu-box:1", ["cpu", "cuda:0"]),
    ]


def test_a_job_that_requires_the_cpu_runs_on_a_cpu_worker(
    client: TestClient, settings: Settings, db: Database
) -> None:
    job_id = submit(client, {**JOB, "resources": {"device": "cpu"}})
    assert "waiting for a worker with cpu" in client.get(f"/jobs/{job_id}").json()["warnings"][0]
    worker = Worker(settings, db)
    fleet.register(db, worker.worker_id, "here", ["cpu"], "auto")
    assert client.get(f"/jobs/{job_id}").json()["warnings"] == []
    assert worker.run_once()
    done = client.get(f"/jobs/{job_id}").json()
    assert (done["status"], done["device"]) == ("succeeded", "cpu")


def test_workers_not_seen_for_a_lease_drop_out_of_the_fleet(
    client: TestClient, settings: Settings, db: Database
) -> None:
    fleet.register(db, "gone", "old-box", ["cpu", "cuda:0"], "auto")
    with db.write() as session:
        session.execute(
            update(WorkerRecord).values(
                last_seen_at=utcnow() - timedelta(seconds=settings.lease_seconds + 1)
            )
        )
    assert client.get("/workers").json() == {"workers": []}
    assert fleet.live_device_kinds(db, settings.lease_seconds) == set()
    assert not fleet.renew(db, "never-registered")
    assert fleet.renew(db, "gone")
    assert fleet.live_device_kinds(db, settings.lease_seconds) == {"cpu", "cuda"}


def test_an_unknown_device_requirement_is_a_422(client: TestClient) -> None:
    response = client.post("/jobs", json={**JOB, "resources": {"device": "tpu"}})
    assert response.status_code == 422
    assert "resources" in response.json()["detail"]
