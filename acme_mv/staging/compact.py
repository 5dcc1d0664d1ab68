"""``acme-mv compact``: keep staging at the live keys plus a window of history.

The current state lives in ``staging.orders_state`` / ``order_items_state``
(one row per live key) and the reports in the summary tables, so the versions
and the per-batch deltas are only history: what ``export --as-of`` and
``verify`` read. Compaction removes the history older than ``keep``:

1. the history floor F = the newest batch finished before ``now - keep``,
   never past the newest batch the reports include (R);
   ``analytics.snapshot.history_batch_id`` := F and the deltas of batches
   <= F are deleted, in one transaction (a reader as of an earlier moment then
   gets a clear error, never a wrong answer);
2. every partition of the version tables whose batches are all <= F (and
   that is older than the table's newest non-empty partition) is detached
   CONCURRENTLY and dropped:
   no long lock, no row of the current state touched. While a partition is
   detached, compaction holds the sync lock (a sync waits a moment instead of
   attaching a new partition in the middle of the detach); readers are never
   blocked.

``run`` should call :func:`compact` once a day (see docs/reports.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from psycopg import sql

from acme_mv.config import Settings, parse_duration
from acme_mv.db import Conn, connection, one_value
from acme_mv.errors import BadArgument
from acme_mv.reports import registry
from acme_mv.revision import require_head
from acme_mv.staging import partitions
from acme_mv.staging.batch import SYNC_LOCK_KEY

log = logging.getLogger(__name__)

DEFAULT_KEEP = timedelta(days=35)


def parse_keep(text: str) -> timedelta | None:
    """``35d``, ``12h``, ``1d12h`` (any :func:`acme_mv.config.parse_duration`) -> the window;
    ``all`` -> None (keep everything)."""
    if text.strip().lower() == "all":
        return None
    try:
        window = timedelta(seconds=parse_duration(text))
    except BadArgument:
        raise BadArgument(
            f"--keep-history {text!r} is not a window such as 35d, 12h or all"
        ) from None
    if window <= timedelta(0):
        raise BadArgument(f"--keep-history {text!r} must be longer than nothing (or all)")
    return window


@dataclass(frozen=True, kw_only=True)
class CompactResult:
    #: reports as of any batch >= this one stay exact
    history_batch_id: int
    delta_rows_deleted: int
    partitions_dropped: list[str] = field(default_factory=list)


def compact(
    settings: Settings, *, keep: timedelta | None = DEFAULT_KEEP, now: datetime | None = None
) -> CompactResult:
    """Drop the history older than ``keep`` (None: keep all); see the module docstring."""
    moment = now or datetime.now(UTC)
    with connection(settings.database_url, role="warehouse", autocommit=True) as conn:
        require_head(conn)
        with conn.transaction():
            floor, deleted = _raise_floor(conn, None if keep is None else moment - keep)
        _finish_pending_detaches(conn)
        droppable = [] if keep is None else _droppable(conn, floor)
        dropped = [_drop(conn, table, name) for table, name in droppable]
    result = CompactResult(
        history_batch_id=floor, delta_rows_deleted=deleted, partitions_dropped=dropped
    )
    log.info(
        "compacted: history from batch %d, %d delta rows and %d partitions dropped",
        floor,
        deleted,
        len(dropped),
    )
    return result


def _raise_floor(conn: Conn, cutoff: datetime | None) -> tuple[int, int]:
    row = conn.execute(
        "SELECT history_batch_id, coalesce(refreshed_batch_id, historic_batch_id, 0), "
        "(SELECT coalesce(max(batch_id), 0) FROM staging.sync_batches WHERE finished_at < %s) "
        "FROM analytics.snapshot FOR UPDATE",
        (cutoff,),
    ).fetchone()
    assert row is not None  # the migration inserts the one row
    current, included, old = (int(v) for v in row)
    floor = current if cutoff is None else max(current, min(old, included))
    deleted = 0
    if floor > current:
        conn.execute("UPDATE analytics.snapshot SET history_batch_id = %s", (floor,))
        for summary in registry.summaries():
            cur = conn.execute(
                sql.SQL("DELETE FROM {} WHERE batch_id <= %s").format(summary.table("delta")),
                (floor,),
            )
            deleted += max(cur.rowcount, 0)
    return floor, deleted


def _droppable(conn: Conn, floor: int) -> list[tuple[str, str]]:
    """Per version table, the partitions whose batches are all <= ``floor``, oldest first, never
    its newest non-empty one: a version table left empty would make the next sync re-copy the
    whole source table ("initial" mode)."""
    found: list[tuple[str, str]] = []
    for table in partitions.TABLES:
        rows = conn.execute(
            "SELECT partition_name, to_batch FROM staging.version_partitions WHERE table_name = %s "
            "ORDER BY from_batch DESC",
            (table,),
        ).fetchall()
        names = [str(r[0]) for r in rows]
        newest = next((i for i, name in enumerate(names) if _has_rows(conn, name)), len(names))
        found += [
            (table, str(name))
            for name, end in reversed(rows[newest + 1 :])
            if int(end) <= floor + 1
        ]
    return found


def _has_rows(conn: Conn, partition: str) -> bool:
    return one_value(
        conn,
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier("staging", partition)),
        kind=bool,
    )


def _finish_pending_detaches(conn: Conn) -> None:
    """A detach interrupted half-way leaves its partition "detach pending": finish it."""
    rows = conn.execute(
        "SELECT p.relname, c.relname FROM pg_inherits AS i "
        "JOIN pg_class AS c ON c.oid = i.inhrelid JOIN pg_class AS p ON p.oid = i.inhparent "
        "JOIN pg_namespace AS n ON n.oid = p.relnamespace "
        "WHERE n.nspname = 'staging' AND i.inhdetachpending"
    ).fetchall()
    for parent, child in rows:
        conn.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {} FINALIZE").format(
                sql.Identifier("staging", str(parent)), sql.Identifier("staging", str(child))
            )
        )


def _drop(conn: Conn, table: str, name: str) -> str:
    parent, child = sql.Identifier("staging", table), sql.Identifier("staging", name)
    conn.execute("SELECT pg_advisory_lock(%s)", (SYNC_LOCK_KEY,))
    try:
        if one_value(
            conn,
            "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(%s))",
            (f"staging.{name}",),
            kind=bool,
        ):
            # cannot run in a transaction block: this connection is in autocommit
            conn.execute(
                sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY").format(parent, child)
            )
        with conn.transaction():
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(child))
            conn.execute(
                "DELETE FROM staging.version_partitions WHERE "
                "table_name = %s AND partition_name = %s",
                (table, name),
            )
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (SYNC_LOCK_KEY,))
    log.info("dropped staging.%s (every version in it is older than the kept history)", name)
    return name
