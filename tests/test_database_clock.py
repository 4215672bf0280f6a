"""Leases run on the database's clock, and every attempt at a job is on record.

A worker's own clock may be an hour off (a VM resumed from suspend, a host without NTP). The
tests below move this process's whole clock with time-machine (datetime, time.time) while the
database keeps the true time, and show that a worker with a skewed clock neither loses its lease
early nor steals another worker's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
import time_machine
from sqlalchemy import select

from service.config import Settings
from service.loss_history import EpochResult
from service.schemas import JobCreate
from service.storage import queue
from service.storage.db import Database
from service.storage.models import AttemptRecord, Job
from service.submission import build_job
from tests.databases import BACKENDS, migrated_database
from tests.support import placeholder_model

TINY = {"data": {"x": [[0.0], [1.0], [2.0]], "y": [[0.0], [0.5], [1.0]]}}
LEASE = 2.0


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, database_url: str) -> Iterator[Database]:
    with migrated_database(request.param, database_url) as database:
        yield database


def add_job(db: Database, settings: Settings) -> str:
    job = build_job(JobCreate.model_validate(TINY), settings)
    with db.write() as session:
        queue.enqueue(session, job)
    return job.id


def lease_owner(db: Database, job_id: str) -> str | None:
    with db.read() as session:
        return session.scalar(select(Job.lease_owner).where(Job.id == job_id))


def attempts(db: Database, job_id: str) -> list[AttemptRecord]:
    with db.read() as session:
        return list(
            session.scalars(
                select(AttemptRecord)
                .where(AttemptRecord.job_id == job_id)
                .order_by(AttemptRecord.attempt)
            )
        )


def clock_off_by(offset: timedelta) -> time_machine.travel:
    """This process's clock, `offset` away from the true time and ticking on from there."""
    return time_machine.travel(datetime.now(UTC) + offset, tick=True)


@pytest.mark.parametrize("skew", [timedelta(hours=-1), timedelta(hours=1)], ids=["slow", "fast"])
def test_a_skewed_worker_keeps_its_lease_for_exactly_the_lease(
    db: Database, settings: Settings, skew: timedelta
) -> None:
    job_id = add_job(db, settings)
    with clock_off_by(skew):
        assert queue.claim(db, "skewed", LEASE) == job_id
    # A worker with the true clock, and one skewed the other way, both sweep at once: the lease
    # is younger than LEASE by the database's clock, so neither may take it.
    assert queue.recover_expired(db) == 0
    with clock_off_by(-skew):
        assert queue.recover_expired(db) == 0
    assert lease_owner(db, job_id) == "skewed"
    # The skewed worker's heartbeat extends the lease by LEASE from the database's now.
    time.sleep(LEASE * 0.6)
    with clock_off_by(skew):
        assert queue.heartbeat(db, job_id, "skewed", LEASE) is not None
    time.sleep(LEASE * 0.6)  # past the first lease, inside the renewed one
    with clock_off_by(-skew):
        assert queue.recover_expired(db) == 0
    assert lease_owner(db, job_id) == "skewed"
    # Once the worker stops renewing, the lease ends LEASE later by the database's clock: any
    # worker, skewed or not, recovers the job then, and not an hour early or late.
    time.sleep(LEASE * 1.1)
    with clock_off_by(-skew):
        assert queue.recover_expired(db) == 1
    assert lease_owner(db, job_id) is None


def test_every_attempt_is_recorded_on_the_database_clock(db: Database, settings: Settings) -> None:
    job_id = add_job(db, settings)
    with clock_off_by(timedelta(hours=3)):
        assert queue.claim(db, "lost", LEASE) == job_id
    time.sleep(LEASE * 1.1)
    assert queue.recover_expired(db) == 1
    assert queue.claim(db, "leaving", LEASE) == job_id
    assert queue.release(db, job_id, "leaving")
    assert queue.claim(db, "finisher", 30) == job_id
    rows = [EpochResult(1, 0.5, None, 0.1)]
    model = placeholder_model(job_id)
    assert queue.finish_succeeded(db, job_id, "finisher", model, rows, None) == "succeeded"

    records = attempts(db, job_id)
    assert [(a.attempt, a.worker_id, a.outcome) for a in records] == [
        (1, "lost", "expired"),
        (2, "leaving", "released"),  # a hand-back counts no attempt: the next one is 2 again
        (2, "finisher", "succeeded"),
    ]
    # The database's clock stamped them all, so they follow one another without overlap,
    # although the first worker's clock was three hours ahead.
    for earlier, later in pairwise(records):
        assert earlier.ended_at is not None
        assert earlier.started_at <= earlier.ended_at <= later.started_at
    now = datetime.now(UTC)
    assert all(abs(a.started_at - now) < timedelta(minutes=5) for a in records)


def test_an_attempt_that_loses_its_lease_stays_closed(db: Database, settings: Settings) -> None:
    job_id = add_job(db, settings)
    assert queue.claim(db, "slow", LEASE) == job_id
    time.sleep(LEASE * 1.1)
    assert queue.recover_expired(db) == 1
    assert queue.claim(db, "fast", 30) == job_id
    # The first worker wakes up and tries to finish: nothing it writes lands, its record too.
    assert queue.finish_failed(db, job_id, "slow", "late") is False
    outcomes = [(a.worker_id, a.outcome) for a in attempts(db, job_id)]
    assert outcomes == [("slow", "expired"), ("fast", None)]
