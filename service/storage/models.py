"""ORM tables: jobs (the queue), models (immutable trained networks), the loss history, and
uploaded datasets that jobs train from."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import Mapped, deferred, mapped_column

from service.storage.db import Base


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass a UTC-aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(StrEnum):
    """A job's state: the one list of names, which the API's schema and the database's CHECK
    constraint both derive from."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# States a job never leaves.
TERMINAL_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
# States that count against an owner's quota of active jobs.
ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)
STATUS_CHECK = "status IN ({})".format(", ".join(f"'{s.value}'" for s in JobStatus))


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # Who submitted it: a digest of the API key ("" when auth is off). Never the key itself.
    owner: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # A replayed POST with the same Idempotency-Key returns this job instead of a new one.
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.QUEUED)
    # The resolved job spec (every default filled in), without the training data.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Inline training data as safetensors bytes, so any worker on any machine can run the job.
    # Empty once dropped after the retention period (see data_dropped_at).
    data: Mapped[bytes] = deferred(mapped_column(LargeBinary, nullable=False))
    # With a blob store (SERVICE_BLOB_STORE_URL), the data's key there and its size; `data` then
    # holds b"". None: the data is in `data` itself (service/storage/blobs.py, docs/blob-store.md).
    data_ref: Mapped[str | None] = mapped_column(String(200))
    data_ref_size: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # When the retention sweep emptied `data`; None while the job still holds it.
    data_dropped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The uploaded dataset the job trains from instead of inline data (`data` then holds b"").
    # Deleting the dataset is refused while the job is queued or running; once it has ended,
    # the reference is cleared (the model stays).
    dataset_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("datasets.id", ondelete="SET NULL", name="fk_jobs_dataset_id")
    )
    # Bytes of blobs this job holds (data, its model's weights, its checkpoint), kept current by
    # the queue whenever one is written or dropped, so an owner's storage quota is a SUM over
    # an index, never a read of the blobs themselves.
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    n_rows: Mapped[int] = mapped_column(Integer)
    n_features: Mapped[int] = mapped_column(Integer)
    n_outputs: Mapped[int] = mapped_column(Integer)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)

    epochs: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    train_loss: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    best_epoch: Mapped[int | None] = mapped_column(Integer)

    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The device kind the job insists on ("auto", "cpu" or "cuda"); the claim matches it.
    required_device: Mapped[str] = mapped_column(String(10), default="auto", server_default="auto")
    # Where it trains ("cpu", "cuda:0"): set by the worker right after the claim.
    device: Mapped[str | None] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # A sweep's trial: its sweep, the values it sets ({"training.learning_rate": 0.01}), and
    # its stack key: trials of one sweep with the same key train together as one stacked model
    # (service/sweeps.py). All None for a job submitted on its own.
    sweep_id: Mapped[str | None] = mapped_column(String(36))
    trial_params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    stack_key: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        # A sweep's trials, and the claim's look for a trial's queued stack-mates.
        Index("ix_jobs_sweep", "sweep_id", "stack_key", "status"),
        # The claim reads the oldest queued job: a partial index keeps that lookup small.
        Index(
            "ix_jobs_queued",
            "created_at",
            sqlite_where=text("status = 'queued'"),
            postgresql_where=text("status = 'queued'"),
        ),
        # Running rows only, as few as the fleet has workers: the lease sweep reads them all and
        # checks each one's expiry, and GET /workers finds each worker's job by lease_owner.
        # lease_expires_at itself is deliberately not indexed: a heartbeat, the most frequent
        # write, then changes no indexed column, so PostgreSQL updates the row in place (HOT)
        # instead of adding an entry to every index of the table.
        Index(
            "ix_jobs_running",
            "lease_owner",
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
        # An owner's oldest queued job, for the fair claim: a partial index of queued rows only.
        Index(
            "ix_jobs_queued_owner",
            "owner",
            "created_at",
            sqlite_where=text("status = 'queued'"),
            postgresql_where=text("status = 'queued'"),
        ),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_owner_created", "owner", "created_at"),
        # An owner's jobs in one status: its active jobs (the quota) and its running jobs (the
        # fair claim, once per queued job) are each a short index range.
        Index("ix_jobs_owner_status", "owner", "status"),
        # The owner's last claim (max started_at: a seek to the end of the owner's range) and
        # the owner's stored bytes (a SUM read from the index alone, never the table's blobs).
        Index("ix_jobs_owner_usage", "owner", "started_at", "stored_bytes"),
        # The retention sweep's candidates: jobs that still hold their data.
        Index(
            "ix_jobs_data_kept",
            "finished_at",
            sqlite_where=text("data_dropped_at IS NULL"),
            postgresql_where=text("data_dropped_at IS NULL"),
        ),
        Index("ux_jobs_owner_idempotency_key", "owner", "idempotency_key", unique=True),
        # The jobs of a dataset: whether one is active (a delete's check), and the rows a delete
        # clears the reference of, without a scan of the table.
        Index("ix_jobs_dataset", "dataset_id"),
        CheckConstraint(STATUS_CHECK, name="ck_jobs_status"),
    )


class Sweep(Base):
    """A search over hyperparameters: one job per trial (jobs.sweep_id names it). Its status
    and best trial are read from the trials; the row keeps what only the sweep knows."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # A replayed POST /sweeps with the same Idempotency-Key returns this sweep, as for jobs.
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    # How the trials were drawn: {"grid": {...}} or {"random": {...}}, as resolved.
    search: Mapped[dict[str, Any]] = mapped_column(JSON)
    n_trials: Mapped[int] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_sweeps_owner_created", "owner", "created_at"),
        Index("ux_sweeps_owner_idempotency_key", "owner", "idempotency_key", unique=True),
    )


class DatasetRecord(Base):
    """An uploaded dataset: feature columns and a target, stored once and trained from by any
    number of jobs. Immutable once written; service/datasets/ has the format and the rules."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # The owner digest of the API key that uploaded it, as for jobs ("" when auth is off).
    owner: Mapped[str] = mapped_column(String(64), default="", server_default="")
    name: Mapped[str | None] = mapped_column(String(200))
    n_rows: Mapped[int] = mapped_column(Integer)
    # Feature columns plus target columns.
    n_columns: Mapped[int] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(String(200))
    feature_names: Mapped[list[str]] = mapped_column(JSON)
    # One summary per column (name, role, kind, min, max, mean, std, missing), features first.
    columns: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # The target's distinct values when it can be a classification target (labels, or integers
    # with few distinct values); None when it cannot. Submits validate jobs from it without
    # reading the data.
    classes: Mapped[list[Any] | None] = mapped_column(JSON)
    # With a blob store, the data's key there and its size; `data` then holds b"".
    data_ref: Mapped[str | None] = mapped_column(String(200))
    data_ref_size: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The stored data's size wherever it lives: what the owner's storage quota counts.
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The data as safetensors bytes. The table's last column (migration 0010 says why): a new
    # column must not come after it.
    data: Mapped[bytes] = deferred(mapped_column(LargeBinary, nullable=False))

    __table_args__ = (Index("ix_datasets_owner_created", "owner", "created_at"),)


class Model(Base):
    """A trained network. Immutable once written, so API processes may cache it freely."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    task: Mapped[str] = mapped_column(String(20))
    architecture: Mapped[dict[str, Any]] = mapped_column(JSON)
    weights: Mapped[bytes] = deferred(mapped_column(LargeBinary, nullable=False))
    # With a blob store, the weights' key there and their size; `weights` then holds b"".
    weights_ref: Mapped[str | None] = mapped_column(String(200))
    weights_ref_size: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    scalers: Mapped[dict[str, Any]] = mapped_column(JSON)
    n_features: Mapped[int] = mapped_column(Integer)
    n_outputs: Mapped[int] = mapped_column(Integer)
    classes: Mapped[list[Any] | None] = mapped_column(JSON)
    # The names of the input columns, when the training data named them (MLflow's scoring
    # protocol matches columns by them); None means inputs are matched by position.
    feature_names: Mapped[list[str] | None] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LossRecord(Base):
    """One epoch of a job's loss history: the event log that /loss and the event streams read."""

    __tablename__ = "loss_history"

    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_loss: Mapped[float] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)


class JobStatusEvent(Base):
    """One change of a job's status, in the order readers may trust (`seq`): the log the event
    streams replay. Written only by triggers on `jobs` (migration 0011 has them and says how
    seq keeps commit order on PostgreSQL); seq is NULL while its transaction is in flight."""

    __tablename__ = "job_status_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int | None] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"))
    owner: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))
    # The job's epoch when its status changed: the change came after that epoch's loss row.
    epoch: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ux_job_status_events_seq", "seq", unique=True),
        Index("ix_job_status_events_job", "job_id", "seq"),
        Index("ix_job_status_events_owner", "owner", "seq"),
        {"sqlite_autoincrement": True},
    )


class AttemptRecord(Base):
    """One attempt at a job: which worker held its lease, from the claim until the attempt
    ended. Both times come from the database's clock, so the attempts of one job can be
    checked never to overlap, whichever machines ran them."""

    __tablename__ = "job_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # How it ended: a final status, "released" (handed back) or "expired" (its worker went
    # silent). None while it runs.
    outcome: Mapped[str | None] = mapped_column(String(20))

    __table_args__ = (Index("ix_job_attempts_job", "job_id", "attempt"),)


class CheckpointRecord(Base):
    """The latest checkpoint of a running job: scratch state, deleted when the job ends."""

    __tablename__ = "checkpoints"

    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkerRecord(Base):
    """A live worker process and the devices it can train on: what the fleet can run.

    Each worker renews `last_seen_at` every heartbeat; one not seen for a lease is gone.
    """

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    # Where it may train, e.g. ["cpu", "cuda:0"]; its device kinds are what the claim matches.
    devices: Mapped[list[str]] = mapped_column(JSON)
    engine: Mapped[str] = mapped_column(String(10))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelDeletion(Base):
    """A log of deleted models, so every API process drops its cached copy within a poll.

    Each process remembers the last `seq` it has seen and reads only newer rows: one small
    indexed query every few hundred milliseconds, not a database round trip per prediction.
    """

    __tablename__ = "model_deletions"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(String(36))
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
