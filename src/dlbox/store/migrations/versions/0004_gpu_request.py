"""jobs keep what GPUs they asked for; IDs are chosen when they start

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("gpu_request", sa.JSON))
    # jobs from before asked for exactly the IDs they were given
    op.execute("UPDATE jobs SET gpu_request = gpu_ids WHERE gpu_ids IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("gpu_request")
