"""per-owner quotas (stored bytes per job, owner indexes), training-data retention, and SQLite
files that give freed space back

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out, not imported: a revision keeps meaning what it meant when it was written.
DATA_KEPT = sa.text("data_dropped_at IS NULL")
# A job's bytes from the lengths of its blobs: length() of a blob is read from the row's header
# (SQLite) or the TOAST pointer (PostgreSQL), not from the blob.
STORED_BYTES = """
    length(data)
    + coalesce((SELECT length(weights) FROM models WHERE models.id = jobs.id), 0)
    + coalesce((SELECT length(state) FROM checkpoints WHERE checkpoints.job_id = jobs.id), 0)
"""
SQLITE_INCREMENTAL = 2  # what PRAGMA auto_vacuum reports for INCREMENTAL


def upgrade() -> None:
    _make_sqlite_vacuum_incremental()
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("stored_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("data_dropped_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(f"UPDATE jobs SET stored_bytes = {STORED_BYTES}")
    op.create_index("ix_jobs_owner_status", "jobs", ["owner", "status"])
    op.create_index("ix_jobs_owner_usage", "jobs", ["owner", "started_at", "stored_bytes"])
    op.create_index(
        "ix_jobs_data_kept",
        "jobs",
        ["finished_at"],
        sqlite_where=DATA_KEPT,
        postgresql_where=DATA_KEPT,
    )


def downgrade() -> None:
    # The SQLite file stays in incremental auto-vacuum: harmless to the older code.
    op.drop_index("ix_jobs_data_kept", table_name="jobs")
    op.drop_index("ix_jobs_owner_usage", table_name="jobs")
    op.drop_index("ix_jobs_owner_status", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("data_dropped_at")
        batch.drop_column("stored_bytes")


def _make_sqlite_vacuum_incremental() -> None:
    """A SQLite file created before the service set auto_vacuum on connect never shrinks.
    Switching it takes a VACUUM, which rewrites the whole file (it needs as much free disk
    again, and holds the database for as long as the copy takes) and cannot run inside a
    transaction: the autocommit block commits the revisions before this one first, then runs it
    on its own. Done first, so that this revision's own changes stay one transaction.

    PostgreSQL needs nothing: autovacuum makes the space of deleted rows reusable.
    """
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    if bind.exec_driver_sql("PRAGMA auto_vacuum").scalar() == SQLITE_INCREMENTAL:
        return  # created by this code: incremental from the start
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        bind.exec_driver_sql("PRAGMA auto_vacuum=INCREMENTAL")
        bind.exec_driver_sql("VACUUM")
