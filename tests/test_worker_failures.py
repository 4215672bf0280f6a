"""How a worker fails a job, and when it must not: the job's own fault fails it with a reason;
a database that fails under it leaves the job to its lease, and the worker goes on."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text, update

from service.config import Settings
from service.storage.db import Database
from service.storage.models import Job
from service.training.worker import Worker
from tests.support import submit_job

TINY: dict[str, Any] = {
    "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": [[0.0], [0.3], [0.6], [0.9]]},
    "training": {"epochs": 3, "batch_size": 2},
}


def submit(client: TestClient) -> str:
    return submit_job(client, TINY)


def test_a_job_whose_stored_data_cannot_be_read_fails_with_the_reason_and_others_go_on(
    client: TestClient, settings: Settings, db: Database
) -> None:
    broken, healthy = submit(client), submit(client)
    with db.write() as session:
        session.execute(update(Job).where(Job.id == broken).values(data=b"not safetensors"))
    worker = Worker(settings, db)
    assert worker.run_once()
    failed = client.get(f"/jobs/{broken}").json()
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["error"].startswith("CorruptBlob: stored training data is not valid")
    assert worker.run_once()
    assert client.get(f"/jobs/{healthy}").json()["status"] == "succeeded"


def test_a_database_that_fails_under_a_job_leaves_it_to_its_lease(
    client: TestClient, settings: Settings, db: Database
) -> None:
    job_id = submit(client)
    with db.write() as session:  # every write of loss rows now fails, after the retries
        session.execute(text("ALTER TABLE loss_history RENAME TO loss_history_away"))
    worker = Worker(settings, db)
    assert worker.run_once()  # the worker survives it
    stranded = client.get(f"/jobs/{job_id}").json()
    # Nothing was written: not failed (the job is not at fault), still leased to that worker,
    # so it is recovered when the lease runs out and resumes elsewhere.
    assert stranded["status"] == "running" and stranded["error"] is None
    with db.read() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.lease_owner == worker.worker_id
