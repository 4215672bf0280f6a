from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from service.storage import db as db_module
from service.storage.db import Database, retry_transient


def sqlite_path(database: Database) -> str:
    path = database.engine.url.database
    assert path is not None
    return path


def test_write_transactions_take_the_write_lock_at_begin(db: Database) -> None:
    """BEGIN IMMEDIATE: a deferred read-then-write would fail with SQLITE_BUSY at once."""
    other = sqlite3.connect(sqlite_path(db), timeout=0, isolation_level=None)
    try:
        with db.write() as session:
            session.execute(text("SELECT count(*) FROM jobs"))  # a read first, as a claim does
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # free again once ours committed
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_reads_do_not_block_writers(db: Database) -> None:
    other = sqlite3.connect(sqlite_path(db), timeout=0, isolation_level=None)
    try:
        with db.read() as session:
            session.execute(text("SELECT count(*) FROM jobs")).scalar()
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(db: Database) -> None:
    with db.read() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA busy_timeout")).scalar() >= 5000


def test_transient_errors_are_retried_then_succeed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_module.time, "sleep", lambda _seconds: None)
    calls = []

    @retry_transient
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError(
                "UPDATE jobs", {}, sqlite3.OperationalError("database is locked")
            )
        return "done"

    assert flaky() == "done" and len(calls) == 3


def test_persistent_transient_errors_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_module.time, "sleep", lambda _seconds: None)

    @retry_transient
    def down() -> None:
        raise OperationalError("SELECT 1", {}, sqlite3.OperationalError("unable to open"))

    with pytest.raises(OperationalError):
        down()


def test_errors_in_the_data_are_not_retried() -> None:
    calls = []

    @retry_transient
    def duplicate() -> None:
        calls.append(1)
        raise IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))

    with pytest.raises(IntegrityError):
        duplicate()
    assert len(calls) == 1
