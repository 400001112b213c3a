"""jobs and metrics

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(128)),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("reason", sa.Text),
        sa.Column("command", sa.JSON, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("env", sa.JSON, nullable=False),
        sa.Column("image_ref", sa.String(256), nullable=False),
        sa.Column("image_id", sa.String(80), nullable=False),
        sa.Column("lock_hash", sa.String(64)),
        sa.Column("spec_hash", sa.String(64)),
        sa.Column("lock_text", sa.Text),
        sa.Column("spec_text", sa.Text),
        sa.Column("git_commit", sa.String(64)),
        sa.Column("git_dirty", sa.Boolean, nullable=False),
        sa.Column("git_diff", sa.Text),
        sa.Column("project_dir", sa.Text),
        sa.Column("workdir", sa.Text),
        sa.Column("mounts", sa.JSON, nullable=False),
        sa.Column("volumes", sa.JSON, nullable=False),
        sa.Column("cpus", sa.Float, nullable=False),
        sa.Column("memory", sa.Integer),
        sa.Column("shm_size", sa.Integer),
        sa.Column("gpu_ids", sa.JSON),
        sa.Column("container_id", sa.String(80)),
        sa.Column("exit_code", sa.Integer),
        sa.Column("peak_memory", sa.Integer),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("submitted_at", sa.Float, nullable=False, index=True),
        sa.Column("started_at", sa.Float),
        sa.Column("ended_at", sa.Float),
        sa.Column("reproduces", sa.String(32)),
    )
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("step", sa.Integer),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("metrics")
    op.drop_table("jobs")
