"""Alembic, driven from Python with acme-mv's own connection.

``upgrade``/``downgrade`` hand a SQLAlchemy connection wrapping a psycopg 3
connection to Alembic (``Config.attributes["connection"]``); ``render_sql``
runs Alembic's offline mode and returns the SQL text.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, pool

from acme_mv import paths
from acme_mv.db import connect
from acme_mv.errors import NotMigrated

log = logging.getLogger(__name__)


def alembic_config(*, stdout: io.StringIO | None = None) -> Config:
    cfg = Config(str(paths.alembic_ini()), stdout=stdout or io.StringIO())
    cfg.set_main_option("script_location", str(paths.migrations_dir()))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


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


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the warehouse at ``url`` up to ``revision``."""
    with _sqlalchemy_connection(url) as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


def downgrade(url: str, revision: str) -> None:
    """Migrate the warehouse at ``url`` down to ``revision`` (``base`` drops everything)."""
    with _sqlalchemy_connection(url) as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
        conn.commit()


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


def current_revision(conn: psycopg.Connection[tuple[object, ...]]) -> str | None:
    """The warehouse's Alembic revision, or None when never migrated."""
    exists = conn.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute("SELECT version_num FROM public.alembic_version").fetchone()
    return str(row[0]) if row else None


def require_head(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Raise :class:`NotMigrated` unless the warehouse is at this code's head revision."""
    current = current_revision(conn)
    head = head_revision()
    if current is None:
        raise NotMigrated("The warehouse is not migrated. Run `acme-mv migrate` first")
    if current != head:
        raise NotMigrated(
            f"The warehouse is at revision {current}, this acme-mv needs {head}. Run `acme-mv migrate`"
        )
