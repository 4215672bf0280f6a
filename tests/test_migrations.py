from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import inspect, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from service.config import Settings
from service.datasets import records as datasets
from service.datasets.csv_upload import read_csv
from service.datasets.limits import UploadLimits
from service.quota import Quota
from service.schemas import JobCreate
from service.storage import queue
from service.storage.blobs import IN_DATABASE
from service.storage.db import Base, Database, make_engine
from service.storage.migrate import alembic_config, upgrade
from service.storage.models import Job, JobStatus, UTCDateTime, utcnow
from service.submission import build_job
from tests.databases import BACKENDS, fresh_postgres_database

TINY_JOB = {"data": {"x": [[0.0], [1.0]], "y": [[0.0], [1.0]]}, "training": {"epochs": 2}}


@pytest.fixture(params=BACKENDS)
def any_database_url(request: pytest.FixtureRequest, database_url: str) -> Iterator[str]:
    """Each test that takes it runs on SQLite and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield database_url
    else:
        with fresh_postgres_database() as url:
            yield url


# The tables as an older revision left them: rows are written with these, not the ORM, whose
# classes always describe the newest schema.
OLD_JOBS = sa.table(
    "jobs",
    *(sa.column(name) for name in ("id", "name", "task", "status", "n_rows", "n_features")),
    *(sa.column(name) for name in ("n_outputs", "epochs", "epoch", "attempts", "max_attempts")),
    sa.column("cancel_requested", sa.Boolean),
    sa.column("spec", sa.JSON),
    sa.column("warnings", sa.JSON),
    sa.column("data", sa.LargeBinary),
    sa.column("created_at", UTCDateTime),
    sa.column("finished_at", UTCDateTime),
)
OLD_MODELS = sa.table(
    "models",
    *(sa.column(name) for name in ("id", "task", "n_features", "n_outputs")),
    *(sa.column(name, sa.JSON) for name in ("architecture", "scalers", "metrics")),
    sa.column("weights", sa.LargeBinary),
    sa.column("created_at", UTCDateTime),
)
OLD_LOSS = sa.table(
    "loss_history", *(sa.column(name) for name in ("job_id", "epoch", "train_loss", "seconds"))
)
OLD_CHECKPOINTS = sa.table(
    "checkpoints",
    sa.column("job_id"),
    sa.column("epoch"),
    sa.column("state", sa.LargeBinary),
    sa.column("created_at", UTCDateTime),
)


def old_job(job_id: str, data: bytes, status: str = "succeeded") -> dict[str, Any]:
    return {
        "id": job_id,
        "name": None,
        "task": "regression",
        "status": status,
        "n_rows": 2,
        "n_features": 1,
        "n_outputs": 1,
        "epochs": 2,
        "epoch": 2,
        "attempts": 1,
        "max_attempts": 3,
        "cancel_requested": False,
        "spec": {},
        "warnings": [],
        "data": data,
        "created_at": utcnow(),
        "finished_at": utcnow() if status == "succeeded" else None,
    }


def old_model(job_id: str, weights: bytes) -> dict[str, Any]:
    return {
        "id": job_id,
        "task": "regression",
        "n_features": 1,
        "n_outputs": 1,
        "architecture": {},
        "scalers": {},
        "metrics": {},
        "weights": weights,
        "created_at": utcnow(),
    }


def write_old_rows(database_url: str, *rows: tuple[sa.TableClause, dict[str, Any]]) -> None:
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            for table, values in rows:
                connection.execute(sa.insert(table).values(**values))
    finally:
        engine.dispose()


def count_rows(database_url: str, *tables: str) -> list[int]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return [
                connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
                for table in tables
            ]
    finally:
        engine.dispose()


def schema_diff(database_url: str) -> list[object]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_migrations_create_exactly_the_orm_tables(any_database_url: str) -> None:
    upgrade(any_database_url)
    assert schema_diff(any_database_url) == []


def test_migrations_downgrade_and_upgrade_again(any_database_url: str) -> None:
    config = alembic_config(any_database_url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    engine = make_engine(any_database_url)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()
    command.upgrade(config, "head")
    assert schema_diff(any_database_url) == []


def test_upgrade_is_idempotent(any_database_url: str) -> None:
    upgrade(any_database_url)
    upgrade(any_database_url)
    assert schema_diff(any_database_url) == []


def test_an_upgrade_that_rebuilds_the_jobs_table_keeps_every_model_and_loss_row(
    database_url: str,
) -> None:
    """SQLite rebuilds a table to add a constraint; with foreign keys on, dropping the old
    copy would cascade to the models and loss history of every job."""
    upgrade(database_url, "0004")  # before the rebuild of jobs in 0005
    write_old_rows(
        database_url,
        (OLD_JOBS, old_job("j1", b"data")),
        (OLD_MODELS, old_model("j1", b"weights")),
        *(
            (OLD_LOSS, {"job_id": "j1", "epoch": e, "train_loss": 1.0 / e, "seconds": 0.1})
            for e in (1, 2)
        ),
    )
    upgrade(database_url)
    assert count_rows(database_url, "jobs", "models", "loss_history") == [1, 1, 2]


def test_the_upgrade_counts_the_bytes_each_existing_job_stores(any_database_url: str) -> None:
    """0006 backfills stored_bytes from the blobs' lengths: data, weights and checkpoint."""
    upgrade(any_database_url, "0005")
    write_old_rows(
        any_database_url,
        (OLD_JOBS, old_job("done", b"d" * 1000)),
        (OLD_MODELS, old_model("done", b"w" * 300)),
        (OLD_JOBS, old_job("running", b"d" * 500, status="running")),
        (
            OLD_CHECKPOINTS,
            {"job_id": "running", "epoch": 1, "state": b"c" * 70, "created_at": utcnow()},
        ),
    )
    upgrade(any_database_url)
    db = Database(any_database_url)
    try:
        with db.read() as session:
            rows = session.execute(sa.select(Job.id, Job.stored_bytes)).all()
            stored = {row.id: row.stored_bytes for row in rows}
    finally:
        db.dispose()
    assert stored == {"done": 1300, "running": 570}


def test_the_upgrade_makes_an_old_sqlite_file_give_freed_space_back(tmp_path: Path) -> None:
    """A file created before auto_vacuum was set on connect is converted by 0006 (a VACUUM
    outside the migration's transaction), keeping its rows."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:  # as older code created it: auto_vacuum off
        old.execute("PRAGMA auto_vacuum=NONE")
        old.execute("CREATE TABLE placeholder (x)")
        old.execute("DROP TABLE placeholder")
    url = f"sqlite:///{path}"
    upgrade(url, "0005")
    write_old_rows(url, (OLD_JOBS, old_job("j1", b"data")))
    assert auto_vacuum(path) == 0  # NONE: setting it on connect cannot change an existing file
    upgrade(url)
    assert auto_vacuum(path) == 2  # INCREMENTAL
    assert count_rows(url, "jobs") == [1]
    assert schema_diff(url) == []


def test_a_new_sqlite_database_gives_freed_space_back_from_the_start(database_url: str) -> None:
    upgrade(database_url)
    assert auto_vacuum(Path(make_url(database_url).database or "")) == 2


def auto_vacuum(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        mode: int = connection.execute("PRAGMA auto_vacuum").fetchone()[0]
    connection.close()
    return mode


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


def test_a_downgrade_below_datasets_refuses_to_strand_their_jobs(
    database_url: str, tmp_path: Path
) -> None:
    """Jobs that train from a dataset have no data of their own: 0010's downgrade refuses."""
    upgrade(database_url)
    settings = Settings(database_url=database_url)
    db = Database(database_url)
    try:
        csv = io.BytesIO(b"a,y\n0,0\n1,1\n")
        built = read_csv(csv, "y", UploadLimits.from_settings(settings), tmp_path)
        dataset = datasets.store(db, IN_DATABASE, built, "", None, Quota.from_settings(settings))
        request = JobCreate.model_validate({"dataset_id": dataset.id, "training": {"epochs": 1}})
        queue.enqueue_once(db, build_job(request, settings, dataset))
    finally:
        db.dispose()
    command.downgrade(alembic_config(database_url), "0010")  # newer revisions go first
    with pytest.raises(RuntimeError, match="1 jobs train from uploaded datasets"):
        command.downgrade(alembic_config(database_url), "0009")
    upgrade(database_url)  # 0010's refusal left its schema whole: back to head cleanly
    assert schema_diff(database_url) == []
