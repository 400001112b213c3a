"""run records say what collection left out; names of removed users stay retired

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("notes", sa.JSON))  # what a limit cut or a bad line skipped, one line each
        batch.add_column(sa.Column("finish_attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("artifact_bytes", sa.BigInteger))
    op.create_table(
        "retired_names",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("removed_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("retired_names")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("artifact_bytes")
        batch.drop_column("finish_attempts")
        batch.drop_column("notes")
