"""A least-privilege report reader: ``acme-mv grant-reader ROLE``.

The reader may read the reports and nothing else: ``USAGE`` on the schema
``analytics`` and ``SELECT`` on every view of ``views/reports/`` (the
reports and the full rankings behind the top ones, which ``acme-mv export``
reads: :func:`acme_mv.reports.registry.report_views`), on
``analytics.snapshot`` (the export's freshness check), and on
``acme_mv.alembic_version`` (every command checks the warehouse's revision).
Never ``staging`` and never the historic or current-day materialized views:
the report views are plain views, which read those with their owner's
privileges.

A later migration that replaces a view keeps these grants:
:func:`acme_mv.reports.views.replace_view` re-applies the grants of every
object it drops and recreates.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from acme_mv.db import connection
from acme_mv.errors import GrantFailed
from acme_mv.reports import registry
from acme_mv.revision import VERSION_SCHEMA, VERSION_TABLE, require_head

log = logging.getLogger(__name__)

ANALYTICS = "analytics"
#: the relations a reader may SELECT, as (schema, name): the views of the registry (the
#: reports and the rankings behind them), the refresh time (the export's never-refreshed
#: check) and the revision
READER_RELATIONS: tuple[tuple[str, str], ...] = (
    *((v.schema, v.name) for v in registry.report_views()),
    (ANALYTICS, "snapshot"),
    (VERSION_SCHEMA, VERSION_TABLE),
)
#: the schemas a reader may look into
READER_SCHEMAS = (ANALYTICS, VERSION_SCHEMA)


def statements(role: str) -> list[sql.Composed]:
    """The GRANT statements that make ``role`` a report reader."""
    grantee = sql.Identifier(role)
    return [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
            sql.SQL(", ").join(sql.Identifier(s) for s in READER_SCHEMAS), grantee
        ),
        sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(
            sql.SQL(", ").join(sql.Identifier(s, n) for s, n in READER_RELATIONS), grantee
        ),
    ]


def render(role: str) -> str:
    """The GRANT statements as SQL text (``acme-mv grant-reader --sql``)."""
    return "".join(f"{stmt.as_string()};\n" for stmt in statements(role))


def grant_reader(url: str, role: str) -> list[str]:
    """Make ``role`` a report reader on the warehouse at ``url``; returns the relations granted.

    Run it as the warehouse role that ran ``acme-mv migrate`` (the owner of the
    objects). The role must exist: acme-mv never creates roles or passwords.
    """
    with connection(url, role="warehouse") as conn:
        require_head(conn)
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if exists is None:
            raise GrantFailed(
                f"There is no role {role!r} on the warehouse. Create it first: "
                f"CREATE ROLE {sql.Identifier(role).as_string(conn)} LOGIN PASSWORD '...'",
                role=role,
            )
        try:
            with conn.transaction():
                for stmt in statements(role):
                    conn.execute(stmt)
        except psycopg.errors.InsufficientPrivilege as exc:
            reason = exc.diag.message_primary or str(exc).splitlines()[0]
            raise GrantFailed(
                f"Cannot grant the reports to {role}: {reason}; run grant-reader as the warehouse "
                "role that ran `acme-mv migrate` (it owns the views)",
                role=role,
            ) from None
    granted = [f"{s}.{n}" for s, n in READER_RELATIONS]
    log.debug("granted SELECT on %s to %s", ", ".join(granted), role)
    return granted
