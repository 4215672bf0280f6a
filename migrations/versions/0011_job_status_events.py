"""job status events: a log of every job's status changes, which the event streams replay

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

The log is written by triggers on `jobs`, so every status change is recorded in the transaction
that makes it, by whichever process makes it, with no change to the code that writes jobs.

`seq` is the order a reader may trust: a reader that has seen seq N never later finds a row
below N. On SQLite writes are serial, so seq is the row id. On PostgreSQL transactions commit
in any order, so a row gets its seq only at commit (a deferred trigger), under a transaction
advisory lock held until the commit is visible: seqs are then handed out in commit order. Rows
not yet numbered (seq NULL) belong to transactions still in flight and are never read.

Caution for later revisions: on SQLite, `batch_alter_table("jobs")` rebuilds the table, which
drops its triggers; such a revision must call `create_sqlite_triggers()` again afterwards
(tests/test_events.py checks the triggers exist at head).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The status event row a job change writes: its state right after the change. The epoch is the
# job's progress, which the queue moves forward with the loss rows in the same transaction.
SQLITE_LOG_ROW = """
    INSERT INTO job_status_events (job_id, owner, status, epoch, error)
    VALUES (NEW.id, NEW.owner, NEW.status, NEW.epoch, NEW.error);
    UPDATE job_status_events SET seq = id WHERE id = last_insert_rowid();
"""
SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER trg_jobs_status_inserted AFTER INSERT ON jobs
    BEGIN {SQLITE_LOG_ROW} END""",
    f"""CREATE TRIGGER trg_jobs_status_changed AFTER UPDATE OF status ON jobs
    WHEN NEW.status IS NOT OLD.status
    BEGIN {SQLITE_LOG_ROW} END""",
)
POSTGRES_FUNCTIONS = (
    """CREATE FUNCTION log_job_status() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO job_status_events (job_id, owner, status, epoch, error)
        VALUES (NEW.id, NEW.owner, NEW.status, NEW.epoch, NEW.error);
        RETURN NULL;
    END $$""",
    # Runs at commit: the lock serialises numbering with commit, so seq follows commit order.
    """CREATE FUNCTION number_job_status_event() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock(hashtext('job_status_events.seq'));
        UPDATE job_status_events SET seq = nextval('job_status_events_seq_seq')
        WHERE id = NEW.id;
        RETURN NULL;
    END $$""",
)
POSTGRES_TRIGGERS = (
    """CREATE TRIGGER trg_jobs_status_inserted AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION log_job_status()""",
    """CREATE TRIGGER trg_jobs_status_changed AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION log_job_status()""",
    """CREATE CONSTRAINT TRIGGER trg_job_status_events_number AFTER INSERT ON job_status_events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION number_job_status_event()""",
)


def create_sqlite_triggers() -> None:
    for statement in SQLITE_TRIGGERS:
        op.execute(statement)


def upgrade() -> None:
    op.create_table(
        "job_status_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column(
            "job_id",
            sa.String(length=36),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        # AUTOINCREMENT: a deleted job's newest row id is never handed out again on SQLite.
        sqlite_autoincrement=True,
    )
    op.create_index("ux_job_status_events_seq", "job_status_events", ["seq"], unique=True)
    op.create_index("ix_job_status_events_job", "job_status_events", ["job_id", "seq"])
    op.create_index("ix_job_status_events_owner", "job_status_events", ["owner", "seq"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE job_status_events_seq_seq OWNED BY job_status_events.seq")
        for statement in (*POSTGRES_FUNCTIONS, *POSTGRES_TRIGGERS):
            op.execute(statement)
    else:
        create_sqlite_triggers()
    # Jobs that exist already start their log with the status they are in now, so a stream of
    # one of them still sees it end.
    op.execute(
        "INSERT INTO job_status_events (job_id, owner, status, epoch, error) "
        "SELECT id, owner, status, epoch, error FROM jobs ORDER BY created_at, id"
    )
    if op.get_bind().dialect.name != "postgresql":
        op.execute("UPDATE job_status_events SET seq = id WHERE seq IS NULL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER trg_jobs_status_inserted ON jobs")
        op.execute("DROP TRIGGER trg_jobs_status_changed ON jobs")
        op.drop_table("job_status_events")  # its own trigger and sequence go with it
        op.execute("DROP FUNCTION log_job_status()")
        op.execute("DROP FUNCTION number_job_status_event()")
    else:
        op.execute("DROP TRIGGER trg_jobs_status_inserted")
        op.execute("DROP TRIGGER trg_jobs_status_changed")
        op.drop_table("job_status_events")
