"""Alembic environment of the registry: runs on the connection ``dockyard.registry.db`` hands it.

Online, the caller owns the connection and its transaction (and the lock that makes concurrent
upgrades safe), so the whole upgrade commits or rolls back as one. Offline (``--sql``) renders the
DDL for the URL in the ``sqlalchemy.url`` option, for a DBA to review.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from dockyard.registry.tables import metadata

config = context.config


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    connection = config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "the registry migrations run through dockyard.registry.db.open_engine, "
            "which passes a connection in config.attributes['connection']"
        )
    run_online(connection)
