"""sweeps: hyperparameter searches whose trials are jobs, and the columns that tie them together

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27

The job columns are added with plain ALTER TABLE ... ADD COLUMN, never a batch rebuild: on
SQLite a rebuild of `jobs` would drop 0011's status triggers.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_COLUMNS = ("sweep_id", "trial_params", "stack_key")


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("owner", sa.String(length=64), nullable=False, server_default=""),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("search", sa.JSON(), nullable=False),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_sweeps_owner_created", "sweeps", ["owner", "created_at"])
    op.create_index(
        "ux_sweeps_owner_idempotency_key", "sweeps", ["owner", "idempotency_key"], unique=True
    )
    op.add_column("jobs", sa.Column("sweep_id", sa.String(length=36), nullable=True))
    op.add_column("jobs", sa.Column("trial_params", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("stack_key", sa.String(length=64), nullable=True))
    op.create_index("ix_jobs_sweep", "jobs", ["sweep_id", "stack_key", "status"])


def downgrade() -> None:
    op.drop_index("ix_jobs_sweep", table_name="jobs")
    # SQLite (3.35+) drops an unindexed column in place, so the triggers stay.
    for column in reversed(JOB_COLUMNS):
        op.drop_column("jobs", column)
    op.drop_index("ux_sweeps_owner_idempotency_key", table_name="sweeps")
    op.drop_index("ix_sweeps_owner_created", table_name="sweeps")
    op.drop_table("sweeps")
