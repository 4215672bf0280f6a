"""The registry of live workers: which devices the fleet can train on right now.

A worker registers at start-up with the devices it may train on, renews its row every
heartbeat and removes it when it stops. One not seen for a lease (killed, frozen, partitioned)
no longer counts: a job that requires a device no live worker has is told so while it waits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, select, update

from service.db import Database, retry_transient
from service.models import WorkerRecord, utcnow
from service.placement import device_kind
from service.tuning import FORGET_WORKERS_AFTER


@retry_transient
def register(
    db: Database, worker_id: str, hostname: str, devices: Sequence[str], engine: str
) -> None:
    now = utcnow()
    with db.write() as session:
        session.execute(
            delete(WorkerRecord).where(WorkerRecord.last_seen_at < now - FORGET_WORKERS_AFTER)
        )
        session.execute(delete(WorkerRecord).where(WorkerRecord.id == worker_id))
        session.add(
            WorkerRecord(
                id=worker_id,
                hostname=hostname,
                devices=list(devices),
                engine=engine,
                started_at=now,
                last_seen_at=now,
            )
        )


@retry_transient
def renew(db: Database, worker_id: str) -> bool:
    """Say this worker is still alive; False when its row is gone (register it again)."""
    with db.write() as session:
        result = session.execute(
            update(WorkerRecord).where(WorkerRecord.id == worker_id).values(last_seen_at=utcnow())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


@retry_transient
def unregister(db: Database, worker_id: str) -> None:
    with db.write() as session:
        session.execute(delete(WorkerRecord).where(WorkerRecord.id == worker_id))


@retry_transient
def live_workers(db: Database, within_seconds: float) -> list[WorkerRecord]:
    """Workers seen in the last `within_seconds`, oldest first."""
    cutoff = utcnow() - timedelta(seconds=within_seconds)
    with db.read() as session:
        return list(
            session.scalars(
                select(WorkerRecord)
                .where(WorkerRecord.last_seen_at >= cutoff)
                .order_by(WorkerRecord.started_at, WorkerRecord.id)
            )
        )


def live_device_kinds(db: Database, within_seconds: float) -> set[str]:
    """The device kinds ("cpu", "cuda") some live worker can train on."""
    return {device_kind(d) for w in live_workers(db, within_seconds) for d in w.devices}
