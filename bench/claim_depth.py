"""What one claim costs as the queue deepens: `service.storage.queue.claim` timed on a fresh
database holding N queued jobs of K owners (plus finished ones, as a live database has), on
SQLite and PostgreSQL. The claim must not grow with the number of queued jobs (docs/scaling.md,
3.3).

    .venv/bin/python -m bench.claim_depth                  # both backends, the default grid
    .venv/bin/python -m bench.claim_depth --backend sqlite --claims 50

Jobs are inserted directly (not through the API), so filling 10,000 takes a second. Each
claimed job stays claimed (at most --claims of them, and never more than are queued).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import insert

from bench.idle import database
from bench.postgres import POSTGRES_URL
from service.storage import queue
from service.storage.db import Database
from service.storage.migrate import upgrade
from service.storage.models import Job, JobStatus, utcnow

# (queued jobs, owners): one owner's deep backlog, and many owners' shorter ones.
GRID = ((10, 1), (1_000, 1), (1_000, 50), (10_000, 1), (10_000, 100))
FINISHED_JOBS = 5_000


def _rows(count: int, owners: int, status: JobStatus, prefix: str) -> list[dict[str, object]]:
    first = utcnow()
    return [
        {
            "id": f"{prefix}-{uuid.uuid4()}"[:36],
            "owner": f"owner-{i % owners}",
            "task": "regression",
            "status": status,
            "spec": {},
            "data": b"",
            "n_rows": 1,
            "n_features": 1,
            "n_outputs": 1,
            "warnings": [],
            "epochs": 1,
            "max_attempts": 3,
            "created_at": first + timedelta(microseconds=i),
            "started_at": first if status != JobStatus.QUEUED else None,
        }
        for i in range(count)
    ]


@contextmanager
def filled(backend: str, postgres_url: str, queued: int, owners: int) -> Iterator[Database]:
    """A fresh, migrated database on `backend` with `queued` jobs waiting, removed afterwards."""
    with database(backend, postgres_url) as (url, _), _opened(url) as db:
        with db.write() as session:
            session.execute(insert(Job), _rows(FINISHED_JOBS, owners, JobStatus.SUCCEEDED, "f"))
            session.execute(insert(Job), _rows(queued, owners, JobStatus.QUEUED, "q"))
        if db.engine.dialect.name == "postgresql":
            # What autovacuum would have done by now on a live server.
            with db.engine.connect() as connection:
                connection.exec_driver_sql("ANALYZE jobs")
                connection.commit()
        yield db


@contextmanager
def _opened(url: str) -> Iterator[Database]:
    upgrade(url)
    db = Database(url)
    try:
        yield db
    finally:
        db.dispose()


def claim_ms(db: Database, claims: int) -> list[float]:
    samples = []
    for i in range(claims):
        start = time.perf_counter()
        assert queue.claim(db, f"bench-{i}", 30) is not None
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.claim_depth", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--claims", type=int, default=30)
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    for backend in args.backend or ("sqlite", "postgresql"):
        for queued, owners in GRID:
            with filled(backend, args.postgres_url, queued, owners) as db:
                samples = claim_ms(db, min(args.claims, queued))
            print(
                f"{backend:10s} queued={queued:6,d} owners={owners:3d}: claim median "
                f"{statistics.median(samples):6.2f} ms, max {max(samples):6.2f} ms"
            )


if __name__ == "__main__":
    main()
