from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import inspect, update
from sqlalchemy.exc import IntegrityError

from service import queue
from service.config import Settings
from service.db import Base, Database, make_engine
from service.loss_history import EpochResult
from service.migrate import alembic_config, upgrade
from service.models import Job, JobStatus
from service.schemas import JobCreate
from service.submission import build_job
from tests.support import placeholder_model

TINY_JOB = {"data": {"x": [[0.0], [1.0]], "y": [[0.0], [1.0]]}, "training": {"epochs": 2}}


def schema_diff(database_url: str) -> list[object]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_migrations_create_exactly_the_orm_tables(database_url: str) -> None:
    upgrade(database_url)
    assert schema_diff(database_url) == []


def test_migrations_downgrade_and_upgrade_again(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    engine = make_engine(database_url)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()
    command.upgrade(config, "head")
    assert schema_diff(database_url) == []


def test_upgrade_is_idempotent(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)
    assert schema_diff(database_url) == []


def test_an_upgrade_that_rebuilds_the_jobs_table_keeps_every_model_and_loss_row(
    database_url: str,
) -> None:
    """SQLite rebuilds a table to add a constraint; with foreign keys on, dropping the old
    copy would cascade to the models and loss history of every job."""
    upgrade(database_url, "0004")  # before the rebuild of jobs in 0005
    db = Database(database_url)
    settings = Settings(database_url=database_url)
    job = build_job(JobCreate.model_validate(TINY_JOB), settings)
    with db.write() as session:
        queue.enqueue(session, job)
    assert queue.claim(db, "w1", 30) == job.id
    rows = [EpochResult(e, 1.0 / e, None, 0.1) for e in (1, 2)]
    model = placeholder_model(job.id)
    assert queue.finish_succeeded(db, job.id, "w1", model, rows, None) == "succeeded"
    db.dispose()

    upgrade(database_url)
    engine = make_engine(database_url)
    with engine.connect() as connection:
        counts = [
            connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
            for table in ("jobs", "models", "loss_history")
        ]
    engine.dispose()
    assert counts == [1, 1, 2]


def test_the_database_refuses_a_status_that_is_not_a_job_status(database_url: str) -> None:
    upgrade(database_url)
    db = Database(database_url)
    job = build_job(JobCreate.model_validate(TINY_JOB), Settings(database_url=database_url))
    with db.write() as session:
        queue.enqueue(session, job)
    with pytest.raises(IntegrityError, match="ck_jobs_status"), db.write() as session:
        session.execute(update(Job).where(Job.id == job.id).values(status="paused"))
    db.dispose()


def test_the_api_filters_by_the_same_statuses(client: TestClient) -> None:
    assert client.get("/jobs", params={"status": "cancelled"}).status_code == 200
    refused = client.get("/jobs", params={"status": "paused"})
    assert refused.status_code == 422 and refused.json()["error"] == "validation_error"
    schema = client.get("/openapi.json").json()["components"]["schemas"]["JobStatus"]
    assert schema["enum"] == [status.value for status in JobStatus]
