"""metric steps are 64-bit: a job may count steps past 2^31

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("metrics") as batch:
        batch.alter_column("step", type_=sa.BigInteger, existing_type=sa.Integer)


def downgrade() -> None:
    with op.batch_alter_table("metrics") as batch:
        batch.alter_column("step", type_=sa.Integer, existing_type=sa.BigInteger)
