"""The registry of live workers: which devices the fleet can train on right now, and what each
worker is training.

A worker registers at start-up (host, pid, devices), renews its row every heartbeat and removes
it when it stops. One not seen for a lease (killed, frozen, partitioned) no longer counts: a job
that requires a device no live worker has is told so while it waits.

Every time here is the database's (service/clock.py), never the worker's: a worker whose clock
runs an hour behind is still seen as alive, and one whose clock runs days ahead cannot make
the others look long gone and forget them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, insert, select, update

from service.clock import database_now
from service.placement import device_kind
from service.storage.db import Database, retry_transient
from service.storage.models import Job, JobStatus, WorkerRecord
from service.tuning import FORGET_WORKERS_AFTER


@retry_transient
def register(
    db: Database, worker_id: str, hostname: str, devices: Sequence[str], engine: str
) -> None:
    """Add the calling process (its pid is recorded) to the registry as `worker_id`."""
    forgotten = database_now(-FORGET_WORKERS_AFTER.total_seconds())
    with db.write() as session:
        session.execute(delete(WorkerRecord).where(WorkerRecord.last_seen_at < forgotten))
        session.execute(delete(WorkerRecord).where(WorkerRecord.id == worker_id))
        session.execute(
            insert(WorkerRecord).values(
                id=worker_id,
                hostname=hostname,
                pid=os.getpid(),
                devices=list(devices),
                engine=engine,
                started_at=database_now(),
                last_seen_at=database_now(),
            )
        )


@retry_transient
def renew(db: Database, worker_id: str) -> bool:
    """Say this worker is still alive; False when its row is gone (register it again)."""
    with db.write() as session:
        result = session.execute(
            update(WorkerRecord)
            .where(WorkerRecord.id == worker_id)
            .values(last_seen_at=database_now())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


@retry_transient
def unregister(db: Database, worker_id: str) -> None:
    with db.write() as session:
        session.execute(delete(WorkerRecord).where(WorkerRecord.id == worker_id))


def _seen_within(seconds: float) -> ColumnElement[bool]:
    return WorkerRecord.last_seen_at >= database_now(-seconds)


@retry_transient
def live_workers(db: Database, within_seconds: float) -> list[WorkerRecord]:
    """Workers seen in the last `within_seconds`, oldest first."""
    with db.read() as session:
        return list(
            session.scalars(
                select(WorkerRecord)
                .where(_seen_within(within_seconds))
                .order_by(WorkerRecord.started_at, WorkerRecord.id)
            )
        )


def live_device_kinds(db: Database, within_seconds: float) -> set[str]:
    """The device kinds ("cpu", "cuda") some live worker can train on."""
    return {device_kind(d) for w in live_workers(db, within_seconds) for d in w.devices}


@dataclass(frozen=True)
class CurrentJob:
    """The running job whose lease a worker holds."""

    id: str
    epoch: int
    epochs: int
    started_at: datetime | None


@dataclass(frozen=True)
class Member:
    """A live worker and the job it is training (None while it waits for one)."""

    worker: WorkerRecord
    job: CurrentJob | None


@retry_transient
def roster(db: Database, within_seconds: float) -> list[Member]:
    """Workers seen in the last `within_seconds`, oldest first, each with its current job: one
    query, however large the fleet (running jobs are found through the status index)."""
    holds_lease = and_(Job.lease_owner == WorkerRecord.id, Job.status == JobStatus.RUNNING)
    statement = (
        select(WorkerRecord, Job.id, Job.epoch, Job.epochs, Job.started_at)
        .outerjoin(Job, holds_lease)
        .where(_seen_within(within_seconds))
        # A worker trains one job at a time, but one whose lease ran out may still read as
        # running (until the sweep requeues it) beside the job the worker has claimed since:
        # the later one is its current job.
        .order_by(WorkerRecord.started_at, WorkerRecord.id, Job.started_at.desc())
    )
    members: dict[str, Member] = {}
    with db.read() as session:
        for worker, job_id, epoch, epochs, started_at in session.execute(statement):
            if worker.id in members:
                continue
            job = None if job_id is None else CurrentJob(job_id, epoch, epochs, started_at)
            members[worker.id] = Member(worker, job)
    return list(members.values())
