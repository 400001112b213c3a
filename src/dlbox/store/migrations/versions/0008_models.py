"""the model registry: models per owner, versions numbered per model (never reused), aliases and
every alias move

Revision ID: 0008
Revises: 0007

Self-contained: it only creates tables of its own, so it can be re-chained after another 0007.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(64), nullable=False),
        # the number the next version gets: only ever goes up, so a deleted version's number stays taken
        sa.Column("next_version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("shared", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("owner", "name", name="uq_models_owner_name"),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("files_hash", sa.String(64), nullable=False),
        sa.Column("files_bytes", sa.BigInteger, nullable=False),
        sa.Column("path", sa.Text, nullable=False),  # where in the run's artifacts it came from
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("image_id", sa.String(80), nullable=False),
        sa.Column("lock_hash", sa.String(64)),
        sa.Column("git_commit", sa.String(64)),
        sa.Column("git_dirty", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("code_hash", sa.String(64)),
        sa.Column("metrics", sa.JSON),
        sa.Column("signature", sa.JSON),
        sa.Column("registered_by", sa.String(64), nullable=False),
        sa.Column("registered_at", sa.Float, nullable=False),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
    )
    op.create_table(
        "model_aliases",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("set_by", sa.String(64), nullable=False),
        sa.Column("set_at", sa.Float, nullable=False),
    )
    op.create_table(
        "model_alias_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("from_version", sa.Integer),  # None: the alias was new
        sa.Column("to_version", sa.Integer),  # None: the alias was deleted
        sa.Column("moved_by", sa.String(64), nullable=False),
        sa.Column("moved_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_alias_history")
    op.drop_table("model_aliases")
    op.drop_table("model_versions")
    op.drop_table("models")
