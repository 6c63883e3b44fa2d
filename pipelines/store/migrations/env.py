"""Alembic environment for the review store; run through ``pipelines.store.db.upgrade_database``.

The connection comes from ``config.attributes["connection"]`` (configuration is built in code, no
alembic.ini). Offline (SQL script) mode is not supported: the migration branches on the dialect.
"""

from __future__ import annotations

from alembic import context

from pipelines.store.db import create_store_engine
from pipelines.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:  # noqa: ANN001 - a SQLAlchemy Connection
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate over the caller's connection, or open one from the ``sqlalchemy.url`` option."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection: call pipelines.store.db.upgrade_database(url)")
    engine = create_store_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline migrations are not supported; call pipelines.store.db.upgrade_database(url)")
run_migrations_online()
