"""pipelines: a commit's stages as intent the loop drives; model versions marked blessed or rejected by a
pipeline's gate; an evaluate job's input run; projects a push webhook may start pipelines for

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipelines",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user", sa.String(64), nullable=False, index=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("reason", sa.Text),
        sa.Column("ref", sa.String(256)),
        sa.Column("git_commit", sa.String(64)),
        sa.Column("author", sa.String(256)),
        sa.Column("message", sa.Text),
        sa.Column("code_hash", sa.String(64), nullable=False, index=True),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("image_id", sa.String(80)),
        sa.Column("lock_hash", sa.String(64)),
        sa.Column("model_name", sa.String(64)),
        sa.Column("model_version", sa.Integer),
        sa.Column("champion_version", sa.Integer),
        sa.Column("verdict", sa.JSON),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("submitted_at", sa.Float, nullable=False, index=True),
        sa.Column("started_at", sa.Float),
        sa.Column("ended_at", sa.Float),
    )
    op.create_table(
        "pipeline_stages",
        sa.Column("pipeline_id", sa.String(32), sa.ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(16), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("job_ids", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started_at", sa.Float),
        sa.Column("ended_at", sa.Float),
    )
    op.create_table(
        "hook_projects",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("repo", sa.Text, nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("verdict", sa.String(16)))
        batch.add_column(sa.Column("verdict_detail", sa.JSON))
        batch.add_column(sa.Column("pipeline_id", sa.String(32)))
    op.create_index("ix_model_versions_pipeline_id", "model_versions", ["pipeline_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("input_run", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("input_run")
    op.drop_index("ix_model_versions_pipeline_id", table_name="model_versions")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("pipeline_id")
        batch.drop_column("verdict_detail")
        batch.drop_column("verdict")
    op.drop_table("hook_projects")
    op.drop_table("pipeline_stages")
    op.drop_table("pipelines")
