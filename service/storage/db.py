"""Engine and session factories. The database is the only state the processes share.

SQLite needs care to hold up under several processes:
- WAL lets readers run beside one writer; a busy timeout makes writers wait instead of failing.
- pysqlite's own transaction handling is turned off so that we emit BEGIN ourselves: a write
  transaction starts with BEGIN IMMEDIATE, because a deferred transaction that reads and then
  writes fails with SQLITE_BUSY at once, without waiting out the busy timeout.
- Space freed by deletions goes back to the file system: new databases are created with
  auto_vacuum=INCREMENTAL (migration 0006 converts older ones), and reclaim_free_pages() runs
  an incremental vacuum after deletions. Without it the file never shrinks.

PostgreSQL needs none of this: its autovacuum reuses the space of deleted rows and TOASTed blobs.
"""

from __future__ import annotations

import functools
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from service.tuning import (
    RETRY_ATTEMPTS,
    RETRY_BASE_SECONDS,
    RETRY_CAP_SECONDS,
    SQLITE_BUSY_TIMEOUT_MS,
)

# After a checkpoint SQLite truncates the WAL file to at most this: room for several large jobs'
# writes between checkpoints without regrowing the file each time.
SQLITE_WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024

log = logging.getLogger("service.db")
P = ParamSpec("P")
R = TypeVar("R")


class Base(DeclarativeBase):
    pass


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, see the module docstring
    cursor = dbapi_connection.cursor()
    # Takes effect only before the first table is created, so it must come on connect, ahead of
    # any migration; on an existing database it changes nothing (migration 0006 converts it).
    cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cursor.execute("PRAGMA journal_mode=WAL")
    # A burst of large writes (8 MB jobs) grows the WAL file; past a checkpoint, SQLite cuts it
    # back to this size instead of keeping the peak forever.
    cursor.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_SIZE_LIMIT_BYTES}")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _begin_sqlite_transaction(connection: Connection) -> None:
    options = connection.get_execution_options()
    if options.get("isolation_level") == "AUTOCOMMIT":
        # Asked for no transaction at all (Alembic's autocommit_block, around a VACUUM).
        return
    mode = options.get("sqlite_begin", "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """One engine per process, with a session factory for reads and one for writes."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self.engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False
        )

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any error."""
        with self._writer.begin() as session:
            yield session

    def reclaim_free_pages(self) -> None:
        """Give the pages that deletions freed back to the file system (SQLite; best effort).

        Call it after a transaction that deleted blobs has committed. A busy database only
        postpones the work: the next call frees every page still free then.
        """
        if self.engine.dialect.name != "sqlite":
            return  # PostgreSQL: autovacuum reuses the space; nothing to do here
        raw = self.engine.raw_connection()
        try:
            connection = raw.driver_connection
            assert connection is not None
            # execute() steps a statement once, and this pragma frees one page per step;
            # executescript() steps it to the end, freeing them all.
            connection.executescript("PRAGMA incremental_vacuum;")
            # In WAL mode the file is cut only when a checkpoint copies the vacuum in; PASSIVE
            # never waits for readers (one that is busy leaves it to the next checkpoint).
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.OperationalError as exc:
            log.warning("reclaiming free pages postponed: %s", exc)
        finally:
            raw.close()

    def dispose(self) -> None:
        self.engine.dispose()


def retry_transient(func: Callable[P, R]) -> Callable[P, R]:
    """Retry a whole transaction on transient errors (a busy or briefly unreachable database).

    Capped exponential backoff with jitter, so workers that collided do not collide again.
    Errors in the data itself (integrity, programming) are not transient and raise at once.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(RETRY_ATTEMPTS):
            try:
                return func(*args, **kwargs)
            except OperationalError as exc:
                if attempt == RETRY_ATTEMPTS - 1:
                    raise
                delay = min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2**attempt)
                delay *= random.uniform(0.5, 1.5)
                log.warning(
                    "%s: transient database error (%s); retry in %.2fs",
                    func.__name__,
                    exc.orig,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    return wrapper
