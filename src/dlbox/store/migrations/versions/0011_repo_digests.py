"""repo_digests: the registry digests (REPO@sha256:...) of a job's image, a model version's and a
deployment's, so an engine that lacks the image pulls exactly it (issue 15); deployments also keep the
image ID they were started with

Revision ID: 0011
Revises: 0010

Self-contained: it only adds nullable columns, so it can be re-chained after another 0010.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("repo_digests", sa.JSON))
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("repo_digests", sa.JSON))
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("image_id", sa.String(80)))
        batch.add_column(sa.Column("repo_digests", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("repo_digests")
        batch.drop_column("image_id")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("repo_digests")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("repo_digests")
