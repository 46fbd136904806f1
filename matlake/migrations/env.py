"""Alembic environment for the matlake catalog.

Migrations run through :func:`matlake.platform.migrate.upgrade` (or
``matlake db upgrade``), which passes the catalog connection in
``config.attributes["connection"]``.  Each migration runs in its own
transaction (``transaction_per_migration``), as AiiDA does, so a failure
leaves the catalog at the last good revision.
"""

from __future__ import annotations

from alembic import context

from matlake.platform.catalog import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("matlake migrations need a connection; use `matlake db upgrade`")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        transaction_per_migration=True,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER needs batch mode
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()
