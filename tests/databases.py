"""The databases tests run on: the test's SQLite file, or a fresh PostgreSQL database that is
dropped afterwards (skipped, with the reason, where no server or driver is there)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import NoReturn

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from service.storage.db import Database
from service.storage.migrate import upgrade

# Where the PostgreSQL tests make their scratch databases (a superuser may CREATE DATABASE).
POSTGRES_URL = os.environ.get(
    "SERVICE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


# Set by CI (.ci/run), whose machine has a server: there a PostgreSQL test that cannot reach it
# fails instead of skipping, so the suite cannot pass with its PostgreSQL half silently unrun.
REQUIRE_POSTGRES = os.environ.get("SERVICE_TEST_REQUIRE_POSTGRES") == "1"


def _unavailable(reason: str) -> NoReturn:
    if REQUIRE_POSTGRES:
        pytest.fail(f"{reason} (SERVICE_TEST_REQUIRE_POSTGRES=1: PostgreSQL tests must run)")
    pytest.skip(reason)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards: each test starts clean.
    Skips the test when there is no driver or no server to reach (fails instead under CI)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("the PostgreSQL driver psycopg is not installed")
    admin = sa.create_engine(
        POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    name = f"test_{uuid.uuid4().hex[:16]}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except OperationalError as exc:
        admin.dispose()
        _unavailable(f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc.orig}")
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


BACKENDS = ["sqlite", "postgresql"]


@contextmanager
def migrated_database(backend: str, sqlite_url: str) -> Iterator[Database]:
    """A migrated database on `backend`: the test's SQLite file, or a fresh PostgreSQL one."""
    with nullcontext(sqlite_url) if backend == "sqlite" else fresh_postgres_database() as url:
        upgrade(url)
        database = Database(url)
        try:
            yield database
        finally:
            database.dispose()
