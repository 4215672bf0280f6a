"""Scratch PostgreSQL databases for the benchmarks: one per measurement, dropped afterwards, on
the server at SERVICE_BENCH_POSTGRES_URL (where the bench may CREATE DATABASE)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
POSTGRES_URL = os.environ.get("SERVICE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)


class PostgresUnavailable(Exception):
    """No driver, or no server to make a scratch database on: the message says which."""


@contextlib.contextmanager
def scratch_postgres(admin_url: str = POSTGRES_URL, prefix: str = "bench") -> Iterator[str]:
    """The URL of a new, empty database on `admin_url`'s server, dropped afterwards (by then
    every process using it must have stopped)."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise PostgresUnavailable("the PostgreSQL driver psycopg is not installed") from exc
    admin = sa.create_engine(
        admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except OperationalError as exc:
        admin.dispose()
        safe = make_url(admin_url).render_as_string(hide_password=True)
        first_line = str(exc.orig).splitlines()[0]
        raise PostgresUnavailable(f"PostgreSQL is not reachable at {safe}: {first_line}") from exc
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()
