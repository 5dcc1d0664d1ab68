"""Alembic environment for the acme-mv warehouse.

There are no ORM models (``target_metadata = None``): every migration is raw
SQL. ``acme-mv migrate`` hands its own connection in through
``config.attributes["connection"]``; the plain ``alembic`` command connects to
``ACME_MV_DATABASE_URL``. Offline mode (``--sql``) renders the SQL.

Alembic's version table is ``acme_mv.alembic_version`` (acme-mv's own schema,
created here when missing), never ``public.alembic_version``: see
``acme_mv.migrate``. An acme-mv table left in ``public`` by an earlier version
is moved there first.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from acme_mv.migrate import (
    ENSURE_VERSION_SCHEMA,
    VERSION_SCHEMA,
    VERSION_TABLE,
    prepare_version_table,
)

config = context.config
target_metadata = None

#: where Alembic keeps its bookkeeping
VERSION_OPTIONS = {"version_table": VERSION_TABLE, "version_table_schema": VERSION_SCHEMA}


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        transaction_per_migration=True,
        **VERSION_OPTIONS,
    )
    with context.begin_transaction():
        context.execute(ENSURE_VERSION_SCHEMA)
        context.run_migrations()


def _run_online(conn: Connection) -> None:
    # in its own transaction, before Alembic looks: Alembic then still runs one
    # transaction per migration (it would use the caller's transaction otherwise)
    if conn.in_transaction():
        prepare_version_table(conn)
    else:
        with conn.begin():
            prepare_version_table(conn)
    context.configure(
        connection=conn,
        target_metadata=target_metadata,
        transaction_per_migration=True,
        **VERSION_OPTIONS,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_online(connection)
        return
    import psycopg

    url = os.environ.get("ACME_MV_DATABASE_URL", "")
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(url), poolclass=pool.NullPool
    )
    with engine.connect() as conn:
        _run_online(conn)
        conn.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
