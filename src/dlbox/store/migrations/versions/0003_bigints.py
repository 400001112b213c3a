"""byte counts as 64-bit integers

Revision ID: 0003
Revises: 0002

memory, shm_size and peak_memory are bytes: 8 GiB does not fit a 32-bit INTEGER, which
PostgreSQL refuses ("integer out of range"). SQLite stored them fine, but gets the same
declared types so both schemas match the models; batch mode rebuilds its table.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = ("memory", "shm_size", "peak_memory")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name in COLUMNS:
            batch.alter_column(name, type_=sa.BigInteger, existing_type=sa.Integer, existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name in COLUMNS:
            batch.alter_column(name, type_=sa.Integer, existing_type=sa.BigInteger, existing_nullable=True)
