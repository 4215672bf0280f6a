"""Retention: the training data of jobs that ended long ago is dropped, so an 8 MB job does not
keep its 8 MB forever. The model and the loss history stay; the job says its data is gone.

Cheap to call often: the candidates come from a partial index of jobs that still hold their
data, so a call with nothing to do is one index lookup that finds nothing.

Also here: the sweep of orphan blobs, files in the blob store that no row names (what a crash
between writing a blob and committing its row leaves, see service/storage/blobs.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

from sqlalchemy import select, update

from service import quota
from service.storage import blobs
from service.storage.blobs import IN_DATABASE, BlobStore
from service.storage.db import Database, retry_transient
from service.storage.models import TERMINAL_STATUSES, Job, utcnow

# Jobs emptied per write transaction: short enough that submits and claims waiting on SQLite's
# write lock are not held up for long, large enough that a backlog clears in a few calls.
BATCH_SIZE = 100
# An orphan must be at least this old: a blob is written just before the transaction that
# names it commits, and no such transaction (retries included) lasts anywhere near an hour.
ORPHAN_GRACE_SECONDS = 3600.0
# How often a worker sweeps orphans: a sweep lists the whole store, and orphans are rare.
ORPHAN_SWEEP_SECONDS = 3600.0
# Keys looked up per query while sweeping.
SWEEP_CHUNK = 500


def drop_expired_training_data(
    db: Database,
    retention_seconds: float | None,
    now: datetime | None = None,
    blob_store: BlobStore = IN_DATABASE,
) -> int:
    """Drop the data of every job that ended more than `retention_seconds` before `now`, in
    batches; None keeps data forever. Returns how many jobs' data was dropped."""
    if retention_seconds is None:
        return 0
    cutoff = (now or utcnow()) - timedelta(seconds=retention_seconds)
    dropped = 0
    while True:
        found, emptied = _drop_batch(db, cutoff, blob_store)
        dropped += emptied
        if found < BATCH_SIZE:  # a full batch means there may be more
            break
    if dropped:
        db.reclaim_free_pages()
    return dropped


@retry_transient
def _drop_batch(db: Database, cutoff: datetime, blob_store: BlobStore) -> tuple[int, int]:
    """Empty the data of up to BATCH_SIZE expired jobs: (jobs found, jobs emptied)."""
    expired = (
        select(Job.id, Job.data_ref)
        .where(
            Job.data_dropped_at.is_(None),
            Job.finished_at < cutoff,
            Job.status.in_(TERMINAL_STATUSES),
        )
        .order_by(Job.finished_at)
        .limit(BATCH_SIZE)
    )
    with db.write() as session:
        refs: dict[str, str | None] = {row.id: row.data_ref for row in session.execute(expired)}
        if not refs:
            return 0, 0
        # Still unset: on PostgreSQL another process's sweep may have dropped some meanwhile.
        dropped = session.scalars(
            update(Job)
            .where(Job.id.in_(refs), Job.data_dropped_at.is_(None))
            .values(data=b"", data_ref=None, data_ref_size=0, data_dropped_at=utcnow())
            .returning(Job.id)
        ).all()
        quota.recount_stored_bytes(session, Job.id.in_(dropped))
    # Only once no row names them: a crash before this line leaves orphans, not lost data.
    blob_store.discard(refs[job_id] for job_id in dropped)
    return len(refs), len(dropped)


def sweep_orphan_blobs(
    db: Database,
    blob_store: BlobStore,
    now: float | None = None,
    grace_seconds: float = ORPHAN_GRACE_SECONDS,
) -> int:
    """Delete the blob store's files that no row names and that were written more than
    `grace_seconds` before `now` (seconds since the epoch), and the leftovers of writes that
    died midway; how many files went. Only keys of the documented layout are touched."""
    store = blob_store.external
    if store is None:
        return 0
    cutoff = (time.time() if now is None else now) - grace_seconds
    removed = 0
    for folder in blobs.LAYOUT_FOLDERS:
        removed += store.drop_unfinished_writes(folder, cutoff)
        candidates = (key for key in store.keys(folder, cutoff) if blobs.OWN_KEY.fullmatch(key))
        for chunk in _chunks(candidates, SWEEP_CHUNK):
            named = _named(db, chunk)
            for key in chunk:
                if key not in named:
                    store.delete(key)
                    removed += 1
    return removed


@retry_transient
def _named(db: Database, keys: list[str]) -> set[str]:
    with db.read() as session:
        return blobs.referenced(session, keys)


def _chunks(keys: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for key in keys:
        chunk.append(key)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
