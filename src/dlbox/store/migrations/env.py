"""Alembic environment: dlbox passes the connection in (see store.migrate)."""

from alembic import context

from dlbox.store.db import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
