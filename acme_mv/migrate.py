"""Alembic, driven from Python with acme-mv's own connection.

``upgrade``/``downgrade`` hand a SQLAlchemy connection wrapping a psycopg 3
connection to Alembic (``Config.attributes["connection"]``); ``render_sql``
runs Alembic's offline mode and returns the SQL text.

Alembic's version table lives in acme-mv's own schema, ``acme_mv``
(:data:`VERSION_SCHEMA`), not in ``public``: since PostgreSQL 15 only the
database owner may create in ``public``, and a warehouse role that owns just
its schemas could not create the table there. ``migrations/env.py`` creates
the schema when missing and moves the table of a warehouse migrated by an
earlier acme-mv out of ``public`` (:func:`prepare_version_table`).

A failed migration is one line (:class:`~acme_mv.errors.MigrationFailed`):
PostgreSQL's own message, not SQLAlchemy's, which carries the whole statement.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from psycopg import sql
from sqlalchemy import Connection, create_engine, pool

from acme_mv import paths
from acme_mv.config import describe_target
from acme_mv.db import connect, first_line
from acme_mv.errors import MigrationFailed
from acme_mv.revision import (
    LEGACY_VERSION_SCHEMA,
    VERSION_SCHEMA,
    VERSION_TABLE,
    current_revision,
    head_revision,
    known_revisions,
    require_head,
)

__all__ = [
    "VERSION_SCHEMA",
    "VERSION_TABLE",
    "current_revision",
    "downgrade",
    "head_revision",
    "known_revisions",
    "render_sql",
    "require_head",
    "upgrade",
]

log = logging.getLogger(__name__)

#: create the version schema only when missing: ``CREATE SCHEMA IF NOT EXISTS``
#: would need the CREATE privilege on the database even when the schema exists
#: (PostgreSQL checks it first), and a least-privilege role does not have it
ENSURE_VERSION_SCHEMA = (
    "DO $$BEGIN IF to_regnamespace('acme_mv') IS NULL THEN CREATE SCHEMA acme_mv; END IF; END$$"
)

#: the PostgreSQL error class of a missing privilege
INSUFFICIENT_PRIVILEGE = "42501"
PRIVILEGE_HINT = (
    "the warehouse role must own the schemas acme_mv, staging and analytics "
    '(see docs/deploy-cursor-sync.md, "Roles")'
)


def alembic_config(*, stdout: io.StringIO | None = None) -> Config:
    cfg = Config(str(paths.alembic_ini()), stdout=stdout or io.StringIO())
    cfg.set_main_option("script_location", str(paths.migrations_dir()))
    return cfg


@contextmanager
def _sqlalchemy_connection(url: str) -> Iterator[Connection]:
    # connect() first so a bad URL or password becomes one clean line
    connect(url, role="warehouse").close()
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(url, application_name="acme-mv migrate"),
        poolclass=pool.NullPool,
    )
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


@contextmanager
def _one_line_errors(url: str, what: str) -> Iterator[None]:
    """Turn a failed migration into :class:`MigrationFailed` with PostgreSQL's message only."""
    try:
        yield
    except sqlalchemy.exc.DBAPIError as exc:
        raise MigrationFailed(_failure(url, what, exc.orig), sqlstate=_sqlstate(exc.orig)) from None
    except psycopg.Error as exc:
        raise MigrationFailed(_failure(url, what, exc), sqlstate=exc.sqlstate) from None
    except CommandError as exc:  # an unknown revision and the like
        raise MigrationFailed(f"{what[:1].upper()}{what[1:]} failed: {first_line(exc)}") from None


def _sqlstate(exc: BaseException | None) -> str | None:
    return exc.sqlstate if isinstance(exc, psycopg.Error) else None


def _failure(url: str, what: str, exc: BaseException | None) -> str:
    """``Migrating the warehouse (target) to head failed: <PostgreSQL's primary message>``."""
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        reason = exc.diag.message_primary
    else:
        lines = str(exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
    if _sqlstate(exc) == INSUFFICIENT_PRIVILEGE:
        reason = f"{reason}; {PRIVILEGE_HINT}"
    return f"{what[:1].upper()}{what[1:]} ({describe_target(url)}) failed: {reason}"


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the warehouse at ``url`` up to ``revision``."""
    with (
        _one_line_errors(url, f"migrating the warehouse to {revision}"),
        _sqlalchemy_connection(url) as conn,
    ):
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


def downgrade(url: str, revision: str) -> None:
    """Migrate the warehouse at ``url`` down to ``revision`` (``base`` drops everything)."""
    with (
        _one_line_errors(url, f"downgrading the warehouse to {revision}"),
        _sqlalchemy_connection(url) as conn,
    ):
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
        conn.commit()


def prepare_version_table(conn: Connection) -> None:
    """Create :data:`VERSION_SCHEMA` if missing; move an acme-mv version table out of ``public``.

    Called by ``migrations/env.py`` before Alembic looks for its table. The
    table in ``public`` is moved only when it holds acme-mv revisions (in a
    one-database deployment it could be the source application's own).
    """
    conn.exec_driver_sql(ENSURE_VERSION_SCHEMA)
    if _regclass(conn, VERSION_SCHEMA) or not _regclass(conn, LEGACY_VERSION_SCHEMA):
        return
    legacy = sql.Identifier(LEGACY_VERSION_SCHEMA, VERSION_TABLE).as_string()
    found = {str(r[0]) for r in conn.exec_driver_sql(f"SELECT version_num FROM {legacy}")}  # noqa: S608 - constants
    if found and found <= known_revisions():
        conn.exec_driver_sql(
            sql.SQL("ALTER TABLE {} SET SCHEMA {}")
            .format(
                sql.Identifier(LEGACY_VERSION_SCHEMA, VERSION_TABLE), sql.Identifier(VERSION_SCHEMA)
            )
            .as_string()
        )
        log.info(
            "moved %s.%s to the schema %s", LEGACY_VERSION_SCHEMA, VERSION_TABLE, VERSION_SCHEMA
        )


def _regclass(conn: Connection, schema: str) -> bool:
    qualified = sql.Identifier(schema, VERSION_TABLE).as_string()
    row = conn.exec_driver_sql(
        "SELECT to_regclass(%(name)s) IS NOT NULL", {"name": qualified}
    ).fetchone()
    return bool(row and row[0])


def render_sql(revision_range: str = "head", *, downgrade_to: str | None = None) -> str:
    """The SQL of an upgrade (``base:head`` style ranges allowed) without a server."""
    out = io.StringIO()
    cfg = alembic_config(stdout=out)
    cfg.output_buffer = out
    if downgrade_to is None:
        command.upgrade(cfg, revision_range, sql=True)
    else:
        command.downgrade(cfg, downgrade_to, sql=True)
    return out.getvalue()
