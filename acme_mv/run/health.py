"""How fresh the reports are: the base of ``acme-mv status --max-age`` and the compose healthcheck.

Freshness = now minus the moment of the source the last refresh brought the reports up to:
that of the newest batch it included (``analytics.snapshot.refreshed_batch_id`` ->
:data:`~acme_mv.staging.batch.SOURCE_AT_SQL`). A cursor sync's batch is when it began
reading the source. A change-capture batch is the commit time of its last transaction, so a
lagging stream shows its lag; an idle stream's heartbeat that finds every transaction the
source had written applied moves the newest batch's moment to then (not when a second slot
feeds the warehouse), so a quiet source does not look stale. :func:`read_freshness` is the one
definition: ``status``, the mail and the dashboard read it, a refresh reports the same
moment (``RefreshResult.refreshed_batch_at``) for ``run``'s log line and metrics, and
``run --cdc``'s metrics read it after each heartbeat. Times are the warehouse's clock, a
change-capture moment the source's; never the client's.
A report reader may not read ``staging`` (``grant-reader``): for it the moment is the
refresh's own time, later than the truth by one sync at most.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import sql
from psycopg.rows import class_row

from acme_mv.config import Settings
from acme_mv.db import Conn, UnexpectedResult, connection, one_value
from acme_mv.errors import Stale

__all__ = ["Freshness", "Stale", "freshness", "read_freshness", "require_fresh"]
from acme_mv.revision import require_head
from acme_mv.staging.batch import SOURCE_AT_SQL

_FRESHNESS_SQL = sql.SQL("""
SELECT s.refreshed_at, s.refreshed_batch_id, {source_at} AS read_at,
       -- never below 0; NULL (not 0: greatest skips NULLs) when no batch was refreshed
       CASE WHEN b.batch_id IS NOT NULL
            THEN greatest(extract(epoch FROM clock_timestamp() - {source_at})::float8, 0)
       END AS age_s
FROM analytics.snapshot AS s
LEFT JOIN staging.sync_batches AS b ON b.batch_id = s.refreshed_batch_id
""").format(source_at=sql.SQL(SOURCE_AT_SQL))
#: what a role that may not read staging.sync_batches sees: the refresh's own time
_READER_FRESHNESS_SQL = """
SELECT s.refreshed_at, s.refreshed_batch_id, s.refreshed_at AS read_at,
       greatest(extract(epoch FROM clock_timestamp() - s.refreshed_at)::float8, 0) AS age_s
FROM analytics.snapshot AS s
"""
#: by oid, so that a role without USAGE on staging gets false, not an error
_CAN_READ_BATCHES_SQL = """
SELECT EXISTS (
    SELECT 1 FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = 'staging' AND c.relname = 'sync_batches'
      AND has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT')
)
"""


@dataclass(frozen=True, kw_only=True)
class Freshness:
    """When the reports were last refreshed and how old the data in them is."""

    #: when the last refresh committed (None: never refreshed)
    refreshed_at: datetime | None
    #: the newest sync batch that refresh included (None: nothing synced then)
    refreshed_batch_id: int | None
    #: the moment of the source the reports are up to (see the module doc)
    read_at: datetime | None
    #: now minus ``read_at`` in seconds (None: never refreshed with data)
    age_s: float | None

    def is_stale(self, max_age_s: float) -> bool:
        return self.age_s is None or self.age_s > max_age_s

    def describe(self) -> str:
        if self.refreshed_at is None:
            return "reports never refreshed"
        if self.age_s is None:
            return (
                f"reports refreshed at {self.refreshed_at.isoformat(timespec='seconds')} "
                "with no sync batch yet"
            )
        return (
            f"reports refreshed at {self.refreshed_at.isoformat(timespec='seconds')} "
            f"(batch {self.refreshed_batch_id}, up to the source at "
            f"{self.read_at.isoformat(timespec='seconds') if self.read_at else '-'}), "
            f"freshness {self.age_s:.1f}s"
        )


def read_freshness(conn: Conn) -> Freshness:
    """The reports' freshness on this connection (see the module docstring)."""
    query = _FRESHNESS_SQL if one_value(conn, _CAN_READ_BATCHES_SQL, kind=bool) else None
    row = (
        conn.cursor(row_factory=class_row(Freshness))
        .execute(query or _READER_FRESHNESS_SQL)
        .fetchone()
    )
    if row is None:
        raise UnexpectedResult("analytics.snapshot has no row (its migration inserts the one row)")
    return row


def freshness(settings: Settings) -> Freshness:
    """The reports' freshness, read on the warehouse (NotMigrated when it is not migrated)."""
    with connection(settings.database_url, role="warehouse", autocommit=True) as conn:
        require_head(conn)
        return read_freshness(conn)


def require_fresh(fresh: Freshness, max_age_s: float) -> None:
    """Raise :class:`Stale` (exit 5) when the reports
    are older than ``max_age_s`` or never refreshed."""
    if fresh.is_stale(max_age_s):
        raise Stale(
            f"The reports are stale: {fresh.describe()}; the "
            f"limit is {max_age_s:g}s (is `acme-mv run` running?)",
            age_s=fresh.age_s,
            max_age_s=max_age_s,
        )
