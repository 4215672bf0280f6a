"""A failed job's error is a sentence for its owner: no SQL, no parameters, no pages of text.
The worker's log keeps the details."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from service.config import Settings
from service.storage.db import Database
from service.storage.models import LossRecord
from service.training.job_errors import MAX_ERROR_CHARS
from service.training.worker import Worker
from tests.support import submit_job

# 2 -> 128 -> 128 -> 1: about 17k parameters, 66 kB of weights; its data and spec are tiny.
WIDE: dict[str, Any] = {
    "data": {
        "x": [[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]],
        "y": [[0.0], [0.3], [0.6], [0.9]],
    },
    "model": {"hidden_layers": [128, 128]},
    "training": {"epochs": 3, "batch_size": 2},
}
BLOB_LIMIT = 50_000  # bytes: below the model's weights, above everything else the job writes


@pytest.fixture
def small_blob_db(settings: Settings, db: Database) -> Iterator[Database]:
    """The job's database as a worker sees it, where SQLite refuses any value over BLOB_LIMIT:
    the honest 'string or blob too big' of a model larger than the database takes."""
    limited = Database(settings.database_url)

    def limit(connection: sqlite3.Connection, _record: object) -> None:
        connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, BLOB_LIMIT)

    event.listen(limited.engine, "connect", limit)
    yield limited
    limited.dispose()


def test_a_model_the_database_refuses_fails_its_job_with_a_plain_sentence(
    client: TestClient,
    settings: Settings,
    small_blob_db: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job_id = submit_job(client, WIDE)
    caplog.set_level(logging.ERROR)
    assert Worker(settings, small_blob_db).run_once()
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed"
    error = job["error"]
    assert error.startswith("the trained model could not be stored (its weights are ")
    for internal in ("SQL", "INSERT", "parameters", "models", "blob"):
        assert internal not in error, error
    assert len(error) < 300
    # The operator's log has what the owner does not see.
    assert "string or blob too big" in caplog.text and "INSERT INTO models" in caplog.text
    # The loss rows of the refused transaction are kept with the failed job.
    with small_blob_db.read() as session:
        epochs = session.scalars(select(LossRecord.epoch).where(LossRecord.job_id == job_id))
        assert sorted(epochs) == [1, 2, 3]


def test_another_failure_s_message_is_cut_to_a_sane_length(
    client: TestClient, settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit_job(client, WIDE)

    def verbose_failure(*_args: object) -> None:
        raise ValueError("a library that says too much " * 1000)

    monkeypatch.setattr(Worker, "_place", verbose_failure)
    assert Worker(settings, db).run_once()
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert job["error"].startswith("ValueError: a library that says too much")
    assert len(job["error"]) == MAX_ERROR_CHARS
