"""jobs run a code snapshot: its hash, size and place in the job; who uploaded which snapshot

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("code_hash", sa.String(64)))
        batch.add_column(sa.Column("code_files", sa.Integer))
        batch.add_column(sa.Column("code_bytes", sa.BigInteger))
        batch.add_column(sa.Column("code_dest", sa.Text))
    op.create_index("ix_jobs_code_hash", "jobs", ["code_hash"])  # gc asks which hashes runs refer to
    op.create_table(
        "snapshots",  # a server user may use a snapshot only after sending it (the hash alone proves nothing)
        sa.Column("user", sa.String(64), primary_key=True),
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("files", sa.Integer, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("snapshots")
    op.drop_index("ix_jobs_code_hash", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("code_dest")
        batch.drop_column("code_bytes")
        batch.drop_column("code_files")
        batch.drop_column("code_hash")
