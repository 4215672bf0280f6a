"""datasets: uploaded training data stored once, and jobs that train from it by reference

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out, not imported: a revision keeps meaning what it meant when it was written.
KEY_CHARS = 200
NAME_CHARS = 200


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("owner", sa.String(length=64), nullable=False, server_default=""),
        sa.Column("name", sa.String(length=NAME_CHARS), nullable=True),
        sa.Column("n_rows", sa.Integer(), nullable=False),
        sa.Column("n_columns", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=NAME_CHARS), nullable=False),
        sa.Column("feature_names", sa.JSON(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=True),
        sa.Column("data_ref", sa.String(length=KEY_CHARS), nullable=True),
        sa.Column("data_ref_size", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # Last on purpose. SQLite lays a row out column by column, so every column after a
        # large value is read by walking its overflow pages, and it writes a zero-filled blob
        # (which an upload is streamed into) without building it in memory only when it is a
        # row's last value.
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_datasets_owner_created", "datasets", ["owner", "created_at"])
    # Existing jobs carry their data inline: a NULL reference says exactly that.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("dataset_id", sa.String(length=36), nullable=True))
        batch.create_foreign_key(
            "fk_jobs_dataset_id", "datasets", ["dataset_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_jobs_dataset", ["dataset_id"])


def downgrade() -> None:
    # Refuse rather than strand jobs: a job that trains from a dataset has no data of its own,
    # and a schema before 0010 has nowhere to find it.
    bind = op.get_bind()
    by_reference = bind.execute(
        sa.text("SELECT count(*) FROM jobs WHERE dataset_id IS NOT NULL")
    ).scalar_one()
    if by_reference:
        raise RuntimeError(
            f"{by_reference} jobs train from uploaded datasets; a schema before 0010 cannot "
            "find their data. Delete those jobs first"
        )
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_dataset")
        batch.drop_constraint("fk_jobs_dataset_id", type_="foreignkey")
        batch.drop_column("dataset_id")
    op.drop_index("ix_datasets_owner_created", table_name="datasets")
    op.drop_table("datasets")
