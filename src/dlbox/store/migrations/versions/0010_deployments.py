"""deployments: a served model as recorded intent (what should run), reconciled against the engine

Revision ID: 0010
Revises: 0009

Self-contained: it only creates its own table, so it can be re-chained after another 0009.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(64), primary_key=True),  # the container is dlbox-deploy-NAME
        sa.Column("owner", sa.String(64), nullable=False, index=True),
        sa.Column("model_owner", sa.String(64), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(64)),  # followed; None: pinned versions
        sa.Column("versions", sa.JSON),  # pinned version numbers (alias None)
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("grpc_port", sa.Integer),
        sa.Column("host", sa.String(64), nullable=False),
        sa.Column("memory", sa.BigInteger),
        sa.Column("replicas", sa.Integer, nullable=False, server_default="1"),
        sa.Column("batch_max", sa.Integer, nullable=False, server_default="0"),
        sa.Column("batch_timeout_ms", sa.Float, nullable=False, server_default="2.0"),
        sa.Column("desired", sa.String(16), nullable=False, server_default="running"),
        sa.Column("last_error", sa.Text),
        sa.Column("restarts", sa.Integer, nullable=False, server_default="0"),  # containers dlbox made again
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("deployments")
