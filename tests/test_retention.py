"""Old jobs' training data is dropped, and SQLite gives the freed space back to the disk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from service import retention
from service.config import Settings
from service.schemas import JobCreate
from service.storage import queue
from service.storage.db import Database
from service.storage.models import Job, utcnow
from service.submission import build_job
from service.training.worker import Worker
from tests.databases import BACKENDS, migrated_database
from tests.support import placeholder_model

TINY = {
    "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": [[0.0], [0.3], [0.6], [0.9]]},
    "training": {"epochs": 2, "batch_size": 2},
}
DAY = 24 * 3600.0
BIG = 4 * 1024 * 1024


def ended_job(db: Database, data: bytes | None = None, weights: bytes = b"") -> str:
    """A job that ran and succeeded, with `data` as its stored training data."""
    job = build_job(JobCreate.model_validate(TINY), Settings())
    if data is not None:
        job.data = data  # the queue stores the bytes without reading them
    with db.write() as session:
        queue.enqueue(session, job)
    assert queue.claim(db, "w1", 30) == job.id
    model = placeholder_model(job.id)
    model.weights = weights
    assert queue.finish_succeeded(db, job.id, "w1", model, [], None) == "succeeded"
    return job.id


def age(db: Database, job_id: str, seconds: float) -> None:
    with db.write() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(finished_at=utcnow() - timedelta(seconds=seconds))
        )


def stored(db: Database, job_id: str) -> tuple[bytes, int, bool]:
    with db.read() as session:
        row = session.execute(
            select(Job.data, Job.stored_bytes, Job.data_dropped_at).where(Job.id == job_id)
        ).one()
    return row.data, row.stored_bytes, row.data_dropped_at is not None


@pytest.fixture(params=BACKENDS)
def any_db(request: pytest.FixtureRequest, database_url: str) -> Iterator[Database]:
    with migrated_database(request.param, database_url) as database:
        yield database


def test_data_of_jobs_that_ended_before_the_retention_period_is_dropped(any_db: Database) -> None:
    old = ended_job(any_db, weights=b"w" * 50)
    recent = ended_job(any_db)
    age(any_db, old, 2 * DAY)
    age(any_db, recent, 60)
    queued = build_job(JobCreate.model_validate(TINY), Settings())
    with any_db.write() as session:
        queue.enqueue(session, queued)

    assert retention.drop_expired_training_data(any_db, DAY) == 1
    assert stored(any_db, old) == (b"", 50, True)  # only the model's weights remain counted
    recent_data, recent_bytes, recent_dropped = stored(any_db, recent)
    assert recent_data and recent_bytes == len(recent_data) and not recent_dropped
    assert stored(any_db, queued.id)[0]  # a job that has not ended keeps its data
    assert retention.drop_expired_training_data(any_db, DAY) == 0  # nothing left to do


def test_unset_retention_keeps_data_forever(db: Database) -> None:
    job_id = ended_job(db)
    age(db, job_id, 1000 * DAY)
    assert retention.drop_expired_training_data(db, None) == 0
    assert stored(db, job_id)[0]


def test_a_backlog_is_dropped_in_batches(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "BATCH_SIZE", 2)
    jobs = [ended_job(db) for _ in range(5)]
    for job_id in jobs:
        age(db, job_id, 2 * DAY)
    assert retention.drop_expired_training_data(db, DAY) == 5
    assert all(stored(db, job_id)[2] for job_id in jobs)


def test_a_job_whose_data_was_dropped_says_so_and_keeps_its_model(
    client: TestClient, settings: Settings, db: Database
) -> None:
    job_id = client.post("/jobs", json=TINY).json()["id"]
    assert Worker(settings, db).run_once()
    age(db, job_id, 2 * DAY)
    assert retention.drop_expired_training_data(db, DAY) == 1

    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    assert any("training data dropped" in warning for warning in job["warnings"])
    assert client.get(f"/models/{job_id}").status_code == 200
    assert len(client.get(f"/models/{job_id}/loss").json()["epochs"]) == 2
    predicted = client.post(f"/models/{job_id}/predict", json={"inputs": [[1.5]]})
    assert predicted.status_code == 200, predicted.text


def file_size(database_url: str) -> int:
    return os.path.getsize(Path(make_url(database_url).database or ""))


def test_deleting_a_job_shrinks_the_sqlite_file(db: Database, database_url: str) -> None:
    job_id = ended_job(db, data=os.urandom(BIG), weights=os.urandom(BIG // 4))
    db.reclaim_free_pages()  # checkpoints the WAL, so the file holds the blobs now
    before = file_size(database_url)
    assert before > BIG
    queue.delete_job(db, job_id)
    after = file_size(database_url)
    assert after < before - BIG, (before, after)


def test_dropping_old_data_shrinks_the_sqlite_file(db: Database, database_url: str) -> None:
    job_id = ended_job(db, data=os.urandom(BIG))
    db.reclaim_free_pages()
    before = file_size(database_url)
    age(db, job_id, 2 * DAY)
    assert retention.drop_expired_training_data(db, DAY) == 1
    after = file_size(database_url)
    assert after < before - BIG * 3 // 4, (before, after)
