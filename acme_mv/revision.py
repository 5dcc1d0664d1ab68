"""Which migration the warehouse is at, and which one this code needs, without Alembic.

Every command that reads or writes the warehouse checks its revision
(:func:`require_head`); only ``acme-mv migrate`` runs Alembic
(:mod:`acme_mv.migrate`). The revisions are read from the migration files'
``revision = ...`` and ``down_revision = ...`` lines, as Alembic reads them,
without importing Alembic and SQLAlchemy (a third of a second at start-up).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from psycopg import sql
from psycopg.rows import scalar_row

from acme_mv import paths
from acme_mv.db import Conn, relation_exists
from acme_mv.errors import NotMigrated

#: acme-mv's own schema: Alembic's version table lives here
VERSION_SCHEMA = "acme_mv"
VERSION_TABLE = "alembic_version"
#: where earlier acme-mv versions kept it (Alembic's default); read as a fallback, moved by migrate
LEGACY_VERSION_SCHEMA = "public"


def _revision_of(path: Path) -> tuple[str, str | None] | None:
    """``(revision, down_revision)`` of one migration file, or None for another file."""
    found: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(node, ast.AnnAssign):
            target = node.target
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant):
            found[target.id] = value.value
    revision = found.get("revision")
    if not isinstance(revision, str):
        return None
    down = found.get("down_revision")
    return revision, down if isinstance(down, str) else None


@functools.cache
def _chain() -> dict[str, str | None]:
    """revision -> down_revision, for every migration of this code (they do not change)."""
    chain: dict[str, str | None] = {}
    for path in sorted((paths.migrations_dir() / "versions").glob("*.py")):
        pair = _revision_of(path)
        if pair is not None:
            chain[pair[0]] = pair[1]
    return chain


def known_revisions() -> frozenset[str]:
    """Every revision id of this code's migrations."""
    return frozenset(_chain())


def head_revision() -> str:
    """The revision no other migration builds on (the migrations form one line)."""
    chain = _chain()
    heads = set(chain) - {down for down in chain.values() if down is not None}
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


def current_revision(conn: Conn) -> str | None:
    """The warehouse's Alembic revision, or None when never migrated.

    Read from ``acme_mv.alembic_version``; a warehouse that an earlier acme-mv
    migrated keeps it in ``public`` until the next ``acme-mv migrate`` moves it.
    """
    for schema in (VERSION_SCHEMA, LEGACY_VERSION_SCHEMA):
        table = sql.Identifier(schema, VERSION_TABLE)
        if not relation_exists(conn, schema, VERSION_TABLE):
            continue
        # an empty table (downgraded to base) holds no revision
        revision: str | None = (
            conn.cursor(row_factory=scalar_row)
            .execute(sql.SQL("SELECT version_num FROM {}").format(table))
            .fetchone()
        )
        if schema == VERSION_SCHEMA or revision in known_revisions():
            return revision
    return None


def require_head(conn: Conn) -> None:
    """Raise :class:`NotMigrated` unless the warehouse is at this code's head revision."""
    current = current_revision(conn)
    head = head_revision()
    if current is None:
        raise NotMigrated(
            "The warehouse is not migrated. Run `acme-mv migrate` first", current=None, head=head
        )
    if current != head:
        raise NotMigrated(
            f"The warehouse is at revision {current}, this acme-mv needs {head}. "
            "Run `acme-mv migrate`",
            current=current,
            head=head,
        )
