"""The job queue: the only module that writes job state. Portable across SQLite and PostgreSQL.

Every change a worker makes to a running job is guarded by its lease: the UPDATE matches only
while `lease_owner` is still that worker and the job is still running. A worker that lost its
lease (frozen, partitioned, too slow) therefore writes nothing, and the queue stays consistent
without any cross-process locking beyond the database's own.

Leases are stamped and compared on the database's clock (service/clock.py), never a worker's:
machines whose clocks disagree still agree on when a lease runs out. Each claim opens an
attempt record (job_attempts) and each end of an attempt closes it, in the same transaction as
the job's own change, so the record of who held a job when is exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    CursorResult,
    Executable,
    String,
    TextualSelect,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import quota, wakeup
from service.clock import database_now
from service.errors import Conflict, NotFound
from service.loss_history import EpochResult
from service.storage import blobs
from service.storage.blobs import IN_DATABASE, BlobStore
from service.storage.db import Database, retry_transient
from service.storage.models import (
    TERMINAL_STATUSES,
    AttemptRecord,
    CheckpointRecord,
    Job,
    JobStatus,
    LossRecord,
    Model,
    ModelDeletion,
    Sweep,
    utcnow,
)
from service.tuning import DELETION_LOG_KEEP


def enqueue(session: Session, job: Job, blob_store: BlobStore = IN_DATABASE) -> None:
    job.status = JobStatus.QUEUED
    # With a blob store, the data's file is written before the row that names it commits: a
    # crash in between leaves an orphan file (swept later), never a job without its data.
    blobs.stow_job_data(blob_store, job)
    # A new job's only blob is its data (the model and checkpoints come later).
    job.stored_bytes = quota.job_data_bytes(job)
    session.add(job)


@retry_transient
def enqueue_once(
    db: Database,
    job: Job,
    limits: quota.Quota | None = None,
    blob_store: BlobStore = IN_DATABASE,
) -> tuple[Job, bool]:
    """Queue `job` unless its owner already used its idempotency key: then (that job, False).

    With `limits`, a job past its owner's quota raises QuotaExceeded; a replay of a job that
    already exists is answered whatever the quota, since it stores nothing new.
    """
    for attempt in range(2):
        try:
            with db.write() as session:
                if job.idempotency_key is not None:
                    existing = session.scalar(
                        select(Job).where(
                            Job.owner == job.owner, Job.idempotency_key == job.idempotency_key
                        )
                    )
                    if existing is not None:
                        if existing.id != job.id:  # a racing twin won: our file is nobody's
                            blobs.forget_job_data(blob_store, job)
                        return existing, False
                if limits is not None:
                    quota.check(session, limits, job.owner, quota.job_data_bytes(job))
                enqueue(session, job, blob_store)
            wakeup.announce(db)  # after the commit, so a woken worker finds the job
            return job, True
        except IntegrityError:
            # Two first submissions raced (possible on PostgreSQL); the loser reads the winner.
            if attempt or job.idempotency_key is None:
                raise
    raise AssertionError("unreachable")


@retry_transient
def enqueue_sweep(
    db: Database,
    sweep: Sweep,
    trials: Sequence[Job],
    limits: quota.Quota | None = None,
    blob_store: BlobStore = IN_DATABASE,
) -> tuple[Sweep, bool]:
    """Queue a sweep and every trial's job in one transaction: all of them, or none (a quota
    counts every trial). As enqueue_once: a sweep whose owner already used its idempotency key
    returns (that sweep, False) and stores nothing."""
    for attempt in range(2):
        try:
            with db.write() as session:
                if sweep.idempotency_key is not None:
                    existing = session.scalar(
                        select(Sweep).where(
                            Sweep.owner == sweep.owner,
                            Sweep.idempotency_key == sweep.idempotency_key,
                        )
                    )
                    if existing is not None:
                        if attempt:  # a racing twin won: the files we placed are nobody's
                            for job in trials:
                                blobs.forget_job_data(blob_store, job)
                        return existing, False
                if limits is not None:
                    new_bytes = sum(quota.job_data_bytes(job) for job in trials)
                    quota.check(session, limits, sweep.owner, new_bytes, new_jobs=len(trials))
                session.add(sweep)
                for job in trials:
                    enqueue(session, job, blob_store)
            wakeup.announce(db)
            return sweep, True
        except IntegrityError:
            # Two first submissions raced (possible on PostgreSQL); the loser reads the winner.
            if attempt or sweep.idempotency_key is None:
                raise
    raise AssertionError("unreachable")


def _claimable(
    device_kinds: Sequence[str], job: type[Job] = Job
) -> tuple[ColumnElement[bool], ...]:
    """Queued jobs a worker with these device kinds ("cpu", "cuda") may run."""
    return (job.status == JobStatus.QUEUED, job.required_device.in_(("auto", *device_kinds)))


# Which queued job goes next: round-robin by owner, so one key's thousand jobs cannot starve
# another key's one.
#   1. The owner with the fewest running jobs: with several workers, each owner gets a share.
#   2. Then the owner whose last job started longest ago (never: first). With one worker nobody
#      has a job running at claim time, so this is what takes turns between owners.
#   3. Then the owner whose oldest waiting job is oldest, and that job: each owner's own jobs
#      run in the order it queued them.
#
# The work is per waiting owner, never per queued job, so a claim costs the same at 10 queued
# jobs as at 10,000: `waiting` walks the owners of queued jobs one index seek each (a "loose
# index scan" of ix_jobs_queued_owner), `ranked` takes three index seeks per owner
# (ix_jobs_owner_status, ix_jobs_owner_usage, ix_jobs_queued_owner), and the pick reads the
# chosen owner's oldest job from ix_jobs_queued_owner. Written as SQL: the recursive walk and
# the per-owner pick say what the planner must do more plainly than the ORM could.
_RANKED_OWNERS = """
WITH RECURSIVE waiting(owner) AS (
    SELECT (SELECT first.owner FROM jobs AS first {walk_index}
            WHERE first.status = 'queued' ORDER BY first.owner LIMIT 1)
    UNION ALL
    SELECT (SELECT later.owner FROM jobs AS later {walk_index}
            WHERE later.status = 'queued' AND later.owner > waiting.owner
            ORDER BY later.owner LIMIT 1)
    FROM waiting WHERE waiting.owner IS NOT NULL
),
ranked AS MATERIALIZED (
    SELECT waiting.owner,
        (SELECT count(*) FROM jobs AS other
         WHERE other.owner = waiting.owner AND other.status = 'running') AS running,
        (SELECT max(other.started_at) FROM jobs AS other
         WHERE other.owner = waiting.owner) AS last_start,
        (SELECT min(other.created_at) FROM jobs AS other
         WHERE other.owner = waiting.owner AND other.status = 'queued'
           AND other.required_device IN :device_kinds) AS oldest
    FROM waiting WHERE waiting.owner IS NOT NULL
)
"""
_TURN_ORDER = "ORDER BY running, last_start NULLS FIRST, oldest, owner"
_OWNERS_OLDEST = """
    SELECT candidate.id FROM jobs AS candidate
    WHERE candidate.owner = turn.owner AND candidate.status = 'queued'
      AND candidate.required_device IN :device_kinds
    ORDER BY candidate.created_at, candidate.id
    LIMIT 1
"""
# PostgreSQL: owners in turn, each one's oldest job not being claimed by another worker (SKIP
# LOCKED skips a locked row rather than waiting for it); the first owner that has one wins, so
# the lateral pick runs once, locking one row, unless that owner's jobs are all being claimed.
_FAIREST_POSTGRESQL = f"""{_RANKED_OWNERS.format(walk_index="")}
SELECT pick.id FROM
    (SELECT owner, running, last_start, oldest FROM ranked WHERE oldest IS NOT NULL
     {_TURN_ORDER}) AS turn
CROSS JOIN LATERAL ({_OWNERS_OLDEST} FOR UPDATE SKIP LOCKED) AS pick
LIMIT 1
"""
# SQLite has one writer at a time (BEGIN IMMEDIATE): nothing to skip, and no LATERAL. Without
# table statistics (nothing runs ANALYZE) its planner walks the owners through the status index,
# sorting every queued job at each step: INDEXED BY keeps the walk on the partial index.
_FAIREST_SQLITE = f"""{_RANKED_OWNERS.format(walk_index="INDEXED BY ix_jobs_queued_owner")}
SELECT ({_OWNERS_OLDEST}) AS id FROM ranked AS turn WHERE oldest IS NOT NULL
{_TURN_ORDER}
LIMIT 1
"""


def _fairest(dialect: str, device_kinds: Sequence[str]) -> TextualSelect:
    """The id of the queued job that goes next for a worker with these device kinds."""
    sql = _FAIREST_POSTGRESQL if dialect == "postgresql" else _FAIREST_SQLITE
    kinds: BindParameter[list[str]] = bindparam(
        "device_kinds", value=["auto", *device_kinds], expanding=True
    )
    return text(sql).bindparams(kinds).columns(id=String())


@retry_transient
def has_queued(db: Database, device_kinds: Sequence[str] = ("cpu",)) -> bool:
    """A cheap read, so idle workers poll without taking SQLite's write lock."""
    with db.read() as session:
        return bool(session.scalar(select(exists().where(*_claimable(device_kinds)))))


def claim(
    db: Database, worker_id: str, lease_seconds: float, device_kinds: Sequence[str] = ("cpu",)
) -> str | None:
    """Atomically take the next queued job this worker's devices can run, fairly across owners
    (see _RANKED_OWNERS), so no two workers get the same job, and a job that
    requires a GPU never lands on a CPU worker. Opens the job's attempt record."""
    claimed = claim_stack(db, worker_id, lease_seconds, device_kinds, max_trials=1)
    return claimed[0] if claimed else None


@retry_transient
def claim_stack(
    db: Database,
    worker_id: str,
    lease_seconds: float,
    device_kinds: Sequence[str] = ("cpu",),
    max_trials: int = 1,
    max_stack_bytes: int | None = None,
) -> list[str]:
    """claim(), and when the job is a sweep's trial, up to `max_trials` - 1 more queued trials
    of its sweep with the same stack key, in the same transaction: they train together as one
    stacked model, and no other worker can take some of them in between. The claimed ids,
    the fairest job first, then its stack-mates in the order they were queued ([] when
    nothing is queued).

    With `max_stack_bytes`, fewer: a stack gathers every trial's rows each epoch, float32, so
    its trials times the data's values (rows x (features + outputs)) x 4 bytes stays within it.
    """
    with db.write() as session:
        first = _claim_fairest(
            session, db.engine.dialect.name, worker_id, lease_seconds, device_kinds
        )
        if first is None:
            return []
        job_id, sweep_id, stack_key = first
        if sweep_id is None or stack_key is None or max_trials < 2:
            return [job_id]
        if max_stack_bytes is not None:
            shape = session.execute(
                select(Job.n_rows, Job.n_features, Job.n_outputs).where(Job.id == job_id)
            ).one()
            per_trial = 4 * shape.n_rows * (shape.n_features + shape.n_outputs)
            max_trials = min(max_trials, max(1, max_stack_bytes // max(1, per_trial)))
            if max_trials < 2:
                return [job_id]
        mates = (
            select(Job.id)
            .where(Job.sweep_id == sweep_id, Job.stack_key == stack_key)
            .where(*_claimable(device_kinds))
            .order_by(Job.created_at, Job.id)
            .limit(max_trials - 1)
        )
        if db.engine.dialect.name == "postgresql":
            mates = mates.with_for_update(skip_locked=True)
        ids = [str(mate) for mate in session.scalars(mates)]
        taken = [_take(session, Job.id == mate, worker_id, lease_seconds) for mate in ids]
        return [job_id, *(mate[0] for mate in taken if mate is not None)]


def _claim_fairest(
    session: Session,
    dialect: str,
    worker_id: str,
    lease_seconds: float,
    device_kinds: Sequence[str],
) -> tuple[str, str | None, str | None] | None:
    """Take the fairest queued job: (its id, sweep and stack key), or None."""
    fairest = _fairest(dialect, device_kinds)
    if dialect == "postgresql":
        # One statement. MATERIALIZED makes the planner run the CTE once, as written:
        # inlined into the UPDATE, it may evaluate the LIMIT per outer row and lock (and
        # update) more rows than one.
        chosen = fairest.cte("chosen").prefix_with("MATERIALIZED")
        picked: ColumnElement[bool] = Job.id == chosen.c.id
    else:
        # Two statements in one BEGIN IMMEDIATE transaction: no other writer can come
        # between them. (As a subquery of the UPDATE, SQLite ran the pick per row.)
        job_id = session.execute(fairest).scalar()
        if job_id is None:
            return None
        picked = Job.id == job_id
    return _take(session, picked, worker_id, lease_seconds)


def _take(
    session: Session, which: ColumnElement[bool], worker_id: str, lease_seconds: float
) -> tuple[str, str | None, str | None] | None:
    """Mark the queued job `which` selects running under this worker's lease and open its
    attempt record: (its id, sweep, stack key), or None when it was no longer queued."""
    row = session.execute(
        update(Job)
        .where(which, Job.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.RUNNING,
            lease_owner=worker_id,
            lease_expires_at=database_now(lease_seconds),
            attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, database_now()),
            error=None,
        )
        .returning(Job.id, Job.attempts, Job.sweep_id, Job.stack_key)
    ).one_or_none()
    if row is None:
        return None
    session.execute(
        insert(AttemptRecord).values(
            job_id=row.id, attempt=row.attempts, worker_id=worker_id, started_at=database_now()
        )
    )
    return str(row.id), row.sweep_id, row.stack_key


def _owned(job_id: str, worker_id: str) -> tuple[ColumnElement[bool], ...]:
    return (Job.id == job_id, Job.lease_owner == worker_id, Job.status == JobStatus.RUNNING)


@dataclass(frozen=True)
class Lease:
    cancel_requested: bool


def heartbeat(db: Database, job_id: str, worker_id: str, lease_seconds: float) -> Lease | None:
    """Extend the lease; None when it is no longer ours."""
    return heartbeat_all(db, [job_id], worker_id, lease_seconds).get(job_id)


@retry_transient
def heartbeat_all(
    db: Database, job_ids: Sequence[str], worker_id: str, lease_seconds: float
) -> dict[str, Lease]:
    """Extend the leases of a stack's jobs in one statement: the leases still ours, by job."""
    statement = (
        update(Job)
        .where(Job.id.in_(job_ids), Job.lease_owner == worker_id, Job.status == JobStatus.RUNNING)
        .values(lease_expires_at=database_now(lease_seconds))
        .returning(Job.id, Job.cancel_requested)
    )
    with db.write() as session:
        rows = session.execute(statement).all()
    return {str(r.id): Lease(cancel_requested=bool(r.cancel_requested)) for r in rows}


@retry_transient
def start_attempt(
    db: Database,
    job_id: str,
    worker_id: str,
    device: str,
    keep_epochs: int = 0,
    warning: str | None = None,
) -> bool:
    """Before training: record where it runs, drop loss rows after `keep_epochs` (left by an
    earlier attempt), and add `warning` to the job's warnings. False when the lease is lost."""
    with db.write() as session:
        if not _touch(session, job_id, worker_id, epoch=keep_epochs, device=device):
            return False
        session.execute(
            delete(LossRecord).where(LossRecord.job_id == job_id, LossRecord.epoch > keep_epochs)
        )
        if warning is not None:
            warnings = session.scalar(select(Job.warnings).where(Job.id == job_id)) or []
            session.execute(
                update(Job).where(Job.id == job_id).values(warnings=[*warnings, warning])
            )
        return True


def record_progress(db: Database, job_id: str, worker_id: str, rows: Sequence[EpochResult]) -> bool:
    """Append loss rows and move the job's progress forward; False when the lease is lost."""
    return job_id not in record_progress_of(db, worker_id, {job_id: rows})


@retry_transient
def record_progress_of(
    db: Database, worker_id: str, rows_by_job: Mapping[str, Sequence[EpochResult]]
) -> set[str]:
    """record_progress for several jobs (a stack's trials) in one transaction; the jobs whose
    lease was lost (their rows are not written)."""
    rows_by_job = {job_id: rows for job_id, rows in rows_by_job.items() if rows}
    if not rows_by_job:
        return set()
    with db.write() as session:
        return {
            job_id
            for job_id, rows in rows_by_job.items()
            if not _write_progress(session, job_id, worker_id, rows)
        }


@retry_transient
def finish_succeeded(
    db: Database,
    job_id: str,
    worker_id: str,
    model: Model,
    rows: Sequence[EpochResult],
    best_epoch: int | None,
) -> str | None:
    """Store the model and mark the job succeeded, in one transaction guarded by the lease.

    A cancel accepted while the job ran wins: the job ends cancelled and no model is stored.
    Returns the job's final status, or None when the lease was lost (nothing written).
    """
    with db.write() as session:
        if not _write_progress(session, job_id, worker_id, rows):
            return None
        if session.scalar(select(Job.cancel_requested).where(Job.id == job_id)):
            _finish(session, job_id, worker_id, JobStatus.CANCELLED)
            return JobStatus.CANCELLED
        _finish(session, job_id, worker_id, JobStatus.SUCCEEDED, best_epoch=best_epoch)
        session.add(model)
        session.flush()  # the recount reads the model's weights from the database
        quota.recount_stored_bytes(session, Job.id == job_id)
        return JobStatus.SUCCEEDED


@retry_transient
def finish_cancelled(
    db: Database, job_id: str, worker_id: str, rows: Sequence[EpochResult]
) -> bool:
    with db.write() as session:
        if not _write_progress(session, job_id, worker_id, rows):
            return False
        return _finish(session, job_id, worker_id, JobStatus.CANCELLED)


@retry_transient
def finish_failed(
    db: Database, job_id: str, worker_id: str, error: str, rows: Sequence[EpochResult] = ()
) -> bool:
    with db.write() as session:
        if not _write_progress(session, job_id, worker_id, rows):
            return False
        return _finish(session, job_id, worker_id, JobStatus.FAILED, error=error)


@retry_transient
def save_checkpoint(
    db: Database, job_id: str, worker_id: str, rows: Sequence[EpochResult], epoch: int, state: bytes
) -> bool:
    """Store the loss rows up to `epoch` and the checkpoint taken after it, together."""
    with db.write() as session:
        if not _write_progress(session, job_id, worker_id, rows):
            return False
        _put_checkpoint(session, job_id, epoch, state)
        return True


@retry_transient
def load_checkpoint(db: Database, job_id: str) -> tuple[int, bytes] | None:
    with db.read() as session:
        row = session.get(CheckpointRecord, job_id)
        return None if row is None else (row.epoch, row.state)


def _put_checkpoint(session: Session, job_id: str, epoch: int, state: bytes) -> None:
    session.execute(delete(CheckpointRecord).where(CheckpointRecord.job_id == job_id))
    session.add(CheckpointRecord(job_id=job_id, epoch=epoch, state=state))
    session.flush()  # the recount reads the new checkpoint's size from the database
    quota.recount_stored_bytes(session, Job.id == job_id)


@retry_transient
def release(
    db: Database,
    job_id: str,
    worker_id: str,
    rows: Sequence[EpochResult] = (),
    checkpoint: tuple[int, bytes] | None = None,
) -> bool:
    """Hand a job back to the queue (the worker is shutting down): no attempt is counted.

    With a checkpoint, the next attempt resumes from it instead of starting over.
    """
    with db.write() as session:
        if not _write_progress(session, job_id, worker_id, rows):
            return False
        if checkpoint is not None:
            _put_checkpoint(session, job_id, *checkpoint)
        result = _changed(
            session,
            update(Job)
            .where(*_owned(job_id, worker_id))
            .values(
                status=JobStatus.QUEUED,
                lease_owner=None,
                lease_expires_at=None,
                attempts=Job.attempts - 1,
            ),
        )
        if result != 1:
            return False
        _end_attempts(session, "released", AttemptRecord.job_id == job_id)
        return True


@retry_transient
def recover_expired(db: Database) -> int:
    """Jobs whose worker stopped renewing its lease: requeue, or end them if they cannot go on."""
    now = database_now()
    expired = (Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
    with db.read() as session:
        if not session.scalar(select(exists().where(*expired))):
            return 0
    cleared = {"lease_owner": None, "lease_expires_at": None}
    with db.write() as session:
        # First, while the jobs still read as running: their attempts ended when they expired.
        _end_attempts(session, "expired", AttemptRecord.job_id.in_(select(Job.id).where(*expired)))
        cancelled = _changed(
            session,
            update(Job)
            .where(*expired, Job.cancel_requested.is_(True))
            .values(status=JobStatus.CANCELLED, finished_at=now, **cleared),
        )
        failed = _changed(
            session,
            update(Job)
            .where(*expired, Job.attempts >= Job.max_attempts)
            .values(
                status=JobStatus.FAILED,
                finished_at=now,
                error="the worker running this job stopped responding on every attempt",
                **cleared,
            ),
        )
        requeued = _changed(
            session, update(Job).where(*expired).values(status=JobStatus.QUEUED, **cleared)
        )
        # Jobs that just ended have nothing left to resume (requeued ones keep theirs).
        ended = select(Job.id).where(Job.status.in_(TERMINAL_STATUSES))
        dropped = session.scalars(
            delete(CheckpointRecord)
            .where(CheckpointRecord.job_id.in_(ended))
            .returning(CheckpointRecord.job_id)
        ).all()
        if dropped:
            quota.recount_stored_bytes(session, Job.id.in_(dropped))
    return int(cancelled + failed + requeued)


@retry_transient
def cancel_requested_among(db: Database, job_ids: Sequence[str]) -> set[str]:
    """Which of a stack's jobs have a cancel request: one read for all of them."""
    with db.read() as session:
        rows = session.scalars(
            select(Job.id).where(Job.id.in_(job_ids), Job.cancel_requested.is_(True))
        )
        return {str(job_id) for job_id in rows}


@retry_transient
def request_cancel(db: Database, job_id: str, owner: str | None = None) -> Job:
    """Cancel a queued job at once; ask the worker of a running one to stop between batches.

    Each change is conditional on the status it was decided on, so a cancel that races the
    job's end either lands (the job ends cancelled, without a model) or answers 409.
    With `owner`, another owner's job is reported as not found.
    """
    with db.write() as session:
        job = session.get(Job, job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise NotFound(f"no job with id {job_id}")
        if job.status == JobStatus.QUEUED:
            _changed(
                session,
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                .values(
                    status=JobStatus.CANCELLED, finished_at=database_now(), cancel_requested=True
                ),
            )
            _drop_checkpoint(session, job_id)
        elif job.status == JobStatus.RUNNING:
            _changed(
                session,
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                .values(cancel_requested=True),
            )
        session.refresh(job)
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            raise Conflict(f"job {job_id} already {job.status}; there is nothing to cancel")
        return job


@retry_transient
def delete_job(
    db: Database, job_id: str, owner: str | None = None, blob_store: BlobStore = IN_DATABASE
) -> None:
    """Delete a finished job with its model, loss history and checkpoint (ON DELETE CASCADE),
    and log the deletion, so every API process drops the model from its cache. Its blobs in
    the blob store go after the commit.

    With `owner`, another owner's job is reported as not found.
    """
    with db.write() as session:
        job = session.get(Job, job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise NotFound(f"no job or model with id {job_id}")
        if job.status not in TERMINAL_STATUSES:
            raise Conflict(f"job {job_id} is {job.status}; cancel it before deleting it")
        refs = _delete_ended_jobs(session, [job_id])
    # Only once no row names them: a crash before this line leaves orphans, not lost data.
    blob_store.discard(refs)
    # After the commit: the job's data, weights and checkpoint left free pages behind.
    db.reclaim_free_pages()


def _delete_ended_jobs(session: Session, job_ids: Sequence[str]) -> list[str]:
    """Delete jobs (their models, loss rows and checkpoints cascade) and log their models'
    deletion for every API process's cache; returns their blobs' keys, for after the commit."""
    now = utcnow()
    refs = blobs.refs_of_jobs(session, list(job_ids))
    session.execute(delete(Job).where(Job.id.in_(job_ids)))
    # The newest entry always stays: SQLite would otherwise reuse its sequence number, and
    # a process that had read up to it would miss the next deletion.
    newest = select(func.max(ModelDeletion.seq)).scalar_subquery()
    session.execute(
        delete(ModelDeletion).where(
            ModelDeletion.deleted_at < now - DELETION_LOG_KEEP, ModelDeletion.seq < newest
        )
    )
    session.add_all([ModelDeletion(model_id=job_id, deleted_at=now) for job_id in job_ids])
    return refs


@retry_transient
def cancel_sweep(db: Database, sweep_id: str, owner: str | None = None) -> None:
    """Cancel every trial still queued (at once) or running (at its next batch), and mark the
    sweep cancelled. Trials that already ended keep their models."""
    with db.write() as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None or (owner is not None and sweep.owner != owner):
            raise NotFound(f"no sweep with id {sweep_id}")
        trials = Job.sweep_id == sweep_id
        active = session.scalar(
            select(func.count()).where(trials, Job.status.not_in(TERMINAL_STATUSES))
        )
        if not active and not sweep.cancel_requested:
            raise Conflict(f"every trial of sweep {sweep_id} already ended; nothing to cancel")
        sweep.cancel_requested = True
        queued = list(
            session.scalars(
                update(Job)
                .where(trials, Job.status == JobStatus.QUEUED)
                .values(
                    status=JobStatus.CANCELLED, finished_at=database_now(), cancel_requested=True
                )
                .returning(Job.id)
            )
        )
        for job_id in queued:
            _drop_checkpoint(session, job_id)
        session.execute(
            update(Job).where(trials, Job.status == JobStatus.RUNNING).values(cancel_requested=True)
        )


@retry_transient
def delete_sweep(
    db: Database, sweep_id: str, owner: str | None = None, blob_store: BlobStore = IN_DATABASE
) -> None:
    """Delete a sweep whose trials all ended, with every trial's job, model and loss history."""
    with db.write() as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None or (owner is not None and sweep.owner != owner):
            raise NotFound(f"no sweep with id {sweep_id}")
        rows = session.execute(select(Job.id, Job.status).where(Job.sweep_id == sweep_id)).all()
        active = [r for r in rows if r.status not in TERMINAL_STATUSES]
        if active:
            raise Conflict(
                f"sweep {sweep_id} has {len(active)} trial(s) queued or running; cancel it "
                f"(POST /sweeps/{sweep_id}/cancel) before deleting it"
            )
        refs = _delete_ended_jobs(session, [str(r.id) for r in rows]) if rows else []
        session.delete(sweep)
    blob_store.discard(refs)
    db.reclaim_free_pages()


@retry_transient
def deletions_after(db: Database, seq: int) -> list[tuple[int, str]]:
    """Models deleted after log entry `seq`, oldest first: (seq, model id)."""
    with db.read() as session:
        rows = session.execute(
            select(ModelDeletion.seq, ModelDeletion.model_id)
            .where(ModelDeletion.seq > seq)
            .order_by(ModelDeletion.seq)
        ).all()
    return [(int(row.seq), str(row.model_id)) for row in rows]


def _touch(session: Session, job_id: str, worker_id: str, **values: object) -> bool:
    """Update the job only while this worker owns it; with no values, just check ownership."""
    values = values or {"lease_owner": worker_id}
    result = _changed(session, update(Job).where(*_owned(job_id, worker_id)).values(**values))
    return result == 1


def _write_progress(
    session: Session, job_id: str, worker_id: str, rows: Sequence[EpochResult]
) -> bool:
    progress: dict[str, object] = {}
    if rows:
        last = rows[-1]
        progress = {"epoch": last.epoch, "train_loss": last.train_loss, "val_loss": last.val_loss}
    if not _touch(session, job_id, worker_id, **progress):
        return False
    if rows:
        session.execute(
            insert(LossRecord),
            [
                {
                    "job_id": job_id,
                    "epoch": r.epoch,
                    "train_loss": r.train_loss,
                    "val_loss": r.val_loss,
                    "seconds": r.seconds,
                }
                for r in rows
            ],
        )
    return True


def _finish(
    session: Session,
    job_id: str,
    worker_id: str,
    status: str,
    *,
    error: str | None = None,
    best_epoch: int | None = None,
) -> bool:
    values: dict[str, object] = {
        "status": status,
        "finished_at": database_now(),
        "lease_owner": None,
        "lease_expires_at": None,
    }
    if error is not None:
        values["error"] = error
    if best_epoch is not None:
        values["best_epoch"] = best_epoch
    result = _changed(session, update(Job).where(*_owned(job_id, worker_id)).values(**values))
    _drop_checkpoint(session, job_id)
    if result == 1:
        _end_attempts(session, status, AttemptRecord.job_id == job_id)
    return result == 1


def _end_attempts(session: Session, outcome: str, which: ColumnElement[bool]) -> None:
    """Close the open attempt of each job `which` selects, now, saying how it ended."""
    session.execute(
        update(AttemptRecord)
        .where(which, AttemptRecord.ended_at.is_(None))
        .values(ended_at=database_now(), outcome=outcome)
    )


def _drop_checkpoint(session: Session, job_id: str) -> None:
    """A checkpoint is scratch state for resuming; an ended job has nothing to resume."""
    dropped = session.scalars(
        delete(CheckpointRecord)
        .where(CheckpointRecord.job_id == job_id)
        .returning(CheckpointRecord.job_id)
    ).first()
    if dropped is not None:
        quota.recount_stored_bytes(session, Job.id == job_id)


def _changed(session: Session, statement: Executable) -> int:
    """Run an UPDATE and say how many rows it changed."""
    result = cast("CursorResult[Any]", session.execute(statement))
    return result.rowcount
