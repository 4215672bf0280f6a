"""blob references: training data and model weights may live in a blob store, the rows naming
them by key and recording their size (for the storage quota)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out, not imported: a revision keeps meaning what it meant when it was written.
KEY_CHARS = 200


def upgrade() -> None:
    # Existing rows keep their bytes inline: a NULL reference and a size of 0 say exactly that,
    # so nothing is copied and no blob is read.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("data_ref", sa.String(length=KEY_CHARS), nullable=True))
        batch.add_column(
            sa.Column("data_ref_size", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("weights_ref", sa.String(length=KEY_CHARS), nullable=True))
        batch.add_column(
            sa.Column("weights_ref_size", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    # Refuse rather than strand data: rows whose blobs live in a blob store would be left
    # with empty blob columns and nothing saying where their bytes are.
    bind = op.get_bind()
    external = bind.execute(
        sa.text(
            "SELECT (SELECT count(*) FROM jobs WHERE data_ref IS NOT NULL)"
            " + (SELECT count(*) FROM models WHERE weights_ref IS NOT NULL)"
        )
    ).scalar_one()
    if external:
        raise RuntimeError(
            f"{external} rows name blobs in the blob store; a schema before 0008 cannot find "
            "them. Delete those jobs, or copy their blobs back into the rows, first"
        )
    with op.batch_alter_table("models") as batch:
        batch.drop_column("weights_ref_size")
        batch.drop_column("weights_ref")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("data_ref_size")
        batch.drop_column("data_ref")
