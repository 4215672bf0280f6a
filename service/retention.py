"""Retention: the training data of jobs that ended long ago is dropped, so an 8 MB job does not
keep its 8 MB forever. The model and the loss history stay; the job says its data is gone.

Cheap to call often: the candidates come from a partial index of jobs that still hold their
data, so a call with nothing to do is one index lookup that finds nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update

from service import quota
from service.db import Database, retry_transient
from service.models import TERMINAL_STATUSES, Job, utcnow

# Jobs emptied per write transaction: short enough that submits and claims waiting on SQLite's
# write lock are not held up for long, large enough that a backlog clears in a few calls.
BATCH_SIZE = 100


def drop_expired_training_data(
    db: Database, retention_seconds: float | None, now: datetime | None = None
) -> int:
    """Drop the data of every job that ended more than `retention_seconds` before `now`, in
    batches; None keeps data forever. Returns how many jobs' data was dropped."""
    if retention_seconds is None:
        return 0
    cutoff = (now or utcnow()) - timedelta(seconds=retention_seconds)
    dropped = 0
    while True:
        found, emptied = _drop_batch(db, cutoff)
        dropped += emptied
        if found < BATCH_SIZE:  # a full batch means there may be more
            break
    if dropped:
        db.reclaim_free_pages()
    return dropped


@retry_transient
def _drop_batch(db: Database, cutoff: datetime) -> tuple[int, int]:
    """Empty the data of up to BATCH_SIZE expired jobs: (jobs found, jobs emptied)."""
    expired = (
        select(Job.id)
        .where(
            Job.data_dropped_at.is_(None),
            Job.finished_at < cutoff,
            Job.status.in_(TERMINAL_STATUSES),
        )
        .order_by(Job.finished_at)
        .limit(BATCH_SIZE)
    )
    with db.write() as session:
        ids = session.scalars(expired).all()
        if not ids:
            return 0, 0
        # Still unset: on PostgreSQL another process's sweep may have dropped some meanwhile.
        dropped = session.scalars(
            update(Job)
            .where(Job.id.in_(ids), Job.data_dropped_at.is_(None))
            .values(data=b"", data_dropped_at=utcnow())
            .returning(Job.id)
        ).all()
        quota.recount_stored_bytes(session, Job.id.in_(dropped))
        return len(ids), len(dropped)
