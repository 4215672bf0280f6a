"""Per-owner quotas: how many jobs one API key may have queued or running, and how many bytes
of blobs it may keep stored (training data, models' weights, checkpoints, uploaded datasets).

The queue checks them inside the same write transaction that inserts the job, so concurrent
submits cannot overshoot: SQLite serializes writers, and on PostgreSQL an advisory lock per
owner does the same for one owner's submits (other owners never wait on it).

Stored bytes are never measured by reading blobs: each job carries `stored_bytes`, recounted
from the blobs' lengths (which neither database reads the blob to answer) and the sizes recorded
for blobs kept in a blob store (service/storage/blobs.py) whenever one of its blobs is written or
dropped, and an owner's total is a SUM over an index. An uploaded dataset records its own size
(`datasets.size_bytes`), and jobs that train from it add nothing: they hold no copy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from service.config import Settings
from service.errors import QuotaExceeded
from service.storage.models import ACTIVE_STATUSES, CheckpointRecord, DatasetRecord, Job, Model

# Retry-After for a full queue: about the time a typical job takes to end and free a slot.
ACTIVE_RETRY_AFTER_SECONDS = 30
# Retry-After for full storage: bytes free only when the owner deletes models, or when the
# retention sweep drops old training data, so a retry sooner than this rarely helps.
STORAGE_RETRY_AFTER_SECONDS = 300


@dataclass(frozen=True)
class Quota:
    max_active_jobs: int
    max_stored_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Quota:
        return cls(settings.max_active_jobs_per_key, settings.max_stored_bytes_per_key)


def check(session: Session, quota: Quota, owner: str, new_bytes: int, new_jobs: int = 1) -> None:
    """Raise QuotaExceeded unless `owner` may store `new_jobs` more jobs (a sweep's trials) of
    `new_bytes` in all. Call it in the write transaction that then inserts them."""
    _serialize_owner(session, owner)
    active = session.scalar(
        select(func.count()).where(Job.owner == owner, Job.status.in_(ACTIVE_STATUSES))
    )
    active = active or 0
    if active + new_jobs > quota.max_active_jobs:
        if new_jobs == 1:
            why = f"this API key already has {active} queued or running jobs, the most it may have"
        else:
            why = (
                f"this API key has {active} queued or running jobs; {new_jobs} more would pass "
                f"its limit of {quota.max_active_jobs}"
            )
        raise QuotaExceeded(
            f"{why}; submit again once some have ended, or cancel some",
            retry_after_seconds=ACTIVE_RETRY_AFTER_SECONDS,
        )
    _check_room(session, quota, owner, new_bytes, "this job's data")


def check_storage(
    session: Session, quota: Quota, owner: str, new_bytes: int, what: str = "this upload"
) -> None:
    """Raise QuotaExceeded unless `owner` may store `new_bytes` more (`what` names them). Call
    it in the write transaction that then stores them."""
    _serialize_owner(session, owner)
    _check_room(session, quota, owner, new_bytes, what)


def _check_room(session: Session, quota: Quota, owner: str, new_bytes: int, what: str) -> None:
    stored = stored_bytes_of(session, owner)
    if stored + new_bytes > quota.max_stored_bytes:
        raise QuotaExceeded(
            f"this API key stores {stored} bytes and {what} adds {new_bytes}, past "
            f"its limit of {quota.max_stored_bytes} bytes; delete models or datasets it no "
            "longer needs (DELETE /models/{id}, DELETE /datasets/{id}) to make room",
            retry_after_seconds=STORAGE_RETRY_AFTER_SECONDS,
        )


def stored_bytes_of(session: Session, owner: str) -> int:
    jobs = session.scalar(select(func.sum(Job.stored_bytes)).where(Job.owner == owner))
    datasets = session.scalar(
        select(func.sum(DatasetRecord.size_bytes)).where(DatasetRecord.owner == owner)
    )
    return int(jobs or 0) + int(datasets or 0)


def _serialize_owner(session: Session, owner: str) -> None:
    """On PostgreSQL, make one owner's concurrent submits take turns until they commit, so
    each one's count sees the others' jobs (SQLite's single writer does this already)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    key = int.from_bytes(hashlib.sha256(owner.encode()).digest()[:8], "big", signed=True)
    session.execute(select(func.pg_advisory_xact_lock(key)))


def job_data_bytes(job: Job) -> int:
    """The size of a new job's training data, in its row or in the blob store (the size column
    is unset until the row is first flushed)."""
    return len(job.data) + (job.data_ref_size or 0)


def stored_bytes_expression() -> ColumnElement[int]:
    """A job's stored bytes from the lengths of its blobs (data, model weights, checkpoint):
    a blob's bytes in its row plus those it keeps in the blob store (one of them is 0)."""
    weights = (
        select(func.length(Model.weights) + Model.weights_ref_size)
        .where(Model.id == Job.id)
        .scalar_subquery()
    )
    checkpoint = (
        select(func.length(CheckpointRecord.state))
        .where(CheckpointRecord.job_id == Job.id)
        .scalar_subquery()
    )
    data = func.length(Job.data) + Job.data_ref_size
    return data + func.coalesce(weights, 0) + func.coalesce(checkpoint, 0)


def recount_stored_bytes(session: Session, *where: ColumnElement[bool]) -> None:
    """Bring `stored_bytes` up to date for the jobs matching `where`, after their blobs changed
    in this transaction (flush added rows first: the count reads the database)."""
    session.execute(update(Job).where(*where).values(stored_bytes=stored_bytes_expression()))
