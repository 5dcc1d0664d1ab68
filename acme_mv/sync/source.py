"""The source side of the cursor sync: locks, the cursor window, the incremental read.

The contract's tables and the schema check are :mod:`acme_mv.staging.tables`.

:func:`read_watermark` is the late-commit fix. It runs on the source BEFORE
the REPEATABLE READ snapshot is opened and returns the next cursor: the
earlier of "now" and the start of the oldest transaction still open in the
source database, minus a safety margin. Any transaction that is invisible to
the snapshot about to be taken was either in that list or started after the
read, so every row it writes carries ``updated_at >= cursor`` and the next
sync reads it.

:func:`lock_tables` is the table-rewrite fix (pg_dump's way). A table rewrite
(``ALTER TABLE ... ADD COLUMN x DEFAULT <volatile>``, ``ALTER COLUMN ... TYPE
... USING``, ``VACUUM FULL``, ``CLUSTER``, ``TRUNCATE``) writes every row anew
under its own transaction id, so a snapshot taken before it committed reads
the new table as empty. The sync's snapshot transaction therefore takes
``ACCESS SHARE`` on every table it will read as its very first statements:
``LOCK TABLE`` does not take the REPEATABLE READ snapshot (the first query
does), so a rewrite already running is waited for and then seen whole, and a
rewrite that starts later waits for the sync to commit.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from acme_mv.db import Conn, UnexpectedResult, load_infinity
from acme_mv.defaults import DEFAULT_FALLBACK_LAG as DEFAULT_FALLBACK_LAG
from acme_mv.defaults import DEFAULT_LOCK_TIMEOUT as DEFAULT_LOCK_TIMEOUT
from acme_mv.errors import Busy
from acme_mv.staging.tables import SCHEMA, UPDATED_AT_INDEXED_SQL, TableSpec, no_table, select_all

log = logging.getLogger(__name__)


#: ``CURRENT_TIMESTAMP(3)`` rounds to the millisecond (up to 0.5 ms later than the
#: transaction start) and a backend publishes its ``xact_start`` a moment after it
#: took that timestamp; one second covers both with room to spare, and only costs
#: re-reading (and deduplicating) one more second of rows per sync.
SAFETY_MARGIN = dt.timedelta(seconds=1)


class SourceLocked(Busy):
    """A source table stayed locked by another session longer than the sync waits."""

    def __init__(self, message: str, *, table: str, waited: dt.timedelta) -> None:
        super().__init__(message, resource=table)
        self.table = table
        self.waited = waited


def lock_tables(
    conn: Conn, specs: list[TableSpec], *, timeout: dt.timedelta = DEFAULT_LOCK_TIMEOUT
) -> None:
    """``LOCK TABLE operations.<t> IN ACCESS SHARE MODE`` for each spec, in contract order.

    Must be the first statements of the REPEATABLE READ transaction: LOCK, SET
    and SAVEPOINT take no snapshot, so the snapshot (taken by the next query)
    is younger than any rewrite that held a table when the sync arrived. A
    table that is locked now is logged once and waited for, up to ``timeout``
    for all tables together; then :class:`SourceLocked`. ACCESS SHARE only
    conflicts with ACCESS EXCLUSIVE: the workload's reads and writes go on.
    """
    assert not conn.autocommit, "the locks must be taken inside the snapshot transaction"
    deadline = time.monotonic() + timeout.total_seconds()
    for spec in specs:
        table = sql.Identifier(SCHEMA, spec.name)
        try:
            with conn.transaction():  # a savepoint: a failed NOWAIT leaves the transaction usable
                conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE NOWAIT").format(table))
            continue
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            raise no_table(spec) from None
        except psycopg.errors.LockNotAvailable:
            pass
        left_ms = max(int((deadline - time.monotonic()) * 1000), 1)
        log.warning(
            "%s is locked by another session (a table rewrite "
            "such as ALTER TABLE?): waiting up to %.0f s "
            "for it, so that the sync's snapshot sees the table after it",
            spec.qualified,
            left_ms / 1000,
        )
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{left_ms}ms"))
                )
                conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(table))
                conn.execute("SET LOCAL lock_timeout = DEFAULT")
        except (
            psycopg.errors.UndefinedTable,
            psycopg.errors.InvalidSchemaName,
        ):  # dropped while we waited
            raise no_table(spec) from None
        except psycopg.errors.LockNotAvailable:
            raise SourceLocked(
                f"The source table {spec.qualified} stayed locked by another session for "
                f"{timeout.total_seconds():g} s (a table rewrite, "
                "VACUUM FULL, or an open DDL transaction?): "
                "the sync waits for such locks so that it never reads a rewritten table as empty; "
                "try again when it is done",
                table=spec.qualified,
                waited=timeout,
            ) from None
        except psycopg.errors.DeadlockDetected:
            raise SourceLocked(
                "The sync's lock on the source table "
                f"{spec.qualified} deadlocked with another session "
                "that locks several of the contract's tables "
                "(a multi-table DDL transaction?); try again",
                table=spec.qualified,
                waited=dt.timedelta(seconds=time.monotonic() - deadline) + timeout,
            ) from None
        log.info("%s: lock acquired", spec.qualified)


#: run in its own autocommit statement, BEFORE the snapshot: ``now()`` is this
#: statement's start, so it is taken before pg_stat_activity is read; transactions
#: of other databases cannot write ``operations`` and autovacuum writes no rows
_WATERMARK_SQL = """
SELECT
    now()::timestamp(6) AS clock,
    oldest.xact_start::timestamp(6),
    oldest.pid,
    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
        OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS sees_all,
    current_setting('TimeZone') AS tz,
    (SELECT source FROM pg_settings WHERE name = 'TimeZone') AS tz_source
FROM (SELECT 1) one
LEFT JOIN LATERAL (
    SELECT a.xact_start, a.pid
    FROM pg_stat_activity a
    WHERE a.xact_start IS NOT NULL
      AND a.pid <> pg_backend_pid()
      AND a.datname = current_database()
      AND a.backend_type NOT LIKE 'autovacuum%%'
      AND a.application_name IS DISTINCT FROM %(ignore_app)s
    ORDER BY a.xact_start
    LIMIT 1
) oldest ON true
"""

#: an open transaction older than this holds the cursor back: say so, naming its pid
LONG_TRANSACTION = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Watermark:
    """What the source looked like just before the snapshot."""

    clock: dt.datetime
    oldest_xact: dt.datetime | None
    sees_all: bool
    cursor: dt.datetime


def next_cursor(
    *,
    clock: dt.datetime,
    oldest_xact: dt.datetime | None,
    sees_all: bool,
    fallback_lag: dt.timedelta,
    margin: dt.timedelta = SAFETY_MARGIN,
) -> dt.datetime:
    """The watermark rule (pure): the cursor the next sync reads from.

    The earlier of ``clock`` (the source's ``now()`` just before the snapshot)
    and ``oldest_xact`` (the start of the oldest transaction still open there);
    when the role cannot see other sessions (``sees_all`` false) also no later
    than ``clock - fallback_lag``; then ``margin`` earlier, truncated to the
    millisecond (``updated_at`` is ``timestamp(3)``).
    """
    floor = clock if oldest_xact is None else min(clock, oldest_xact)
    if not sees_all:
        floor = min(floor, clock - fallback_lag)
    return _truncate_ms(floor - margin)


#: key of the warning that this role cannot see other roles' transactions, in ``warned``
HIDDEN_WARNING = "hidden-transactions"


def read_watermark(
    conn: Conn,
    *,
    ignore_application: str,
    fallback_lag: dt.timedelta,
    warned: set[str] | None = None,
) -> Watermark:
    """The next cursor (:func:`next_cursor`), read in autocommit mode before the snapshot is opened.

    ``ignore_application`` is this sync's own warehouse session (the one-database
    deployment would otherwise hold the cursor back at its own start).
    ``warned``: the warnings already logged by whoever owns the set (one
    ``acme-mv run`` keeps one for all its syncs); a warning given is added to
    it. None: every warning that applies is logged.
    """
    assert conn.autocommit, "the watermark must be read outside the snapshot transaction"
    row = conn.execute(_WATERMARK_SQL, {"ignore_app": ignore_application}).fetchone()
    assert row is not None
    clock, oldest, oldest_pid, sees_all, tz, tz_source = row
    if oldest is not None and clock - oldest > LONG_TRANSACTION:
        log.warning(
            "source transaction of pid %s has been open "
            "since %s: the cursor cannot pass its start, "
            "so every sync re-reads the rows changed since then",
            oldest_pid,
            oldest,
        )
    if tz_source == "client":
        log.warning(
            "the source session's TimeZone %s was set by the client (PGTZ?); updated_at is written "
            "in the server's default time zone and the cursor must be computed in it: unset PGTZ",
            tz,
        )
    if not sees_all and (warned is None or HIDDEN_WARNING not in warned):
        log.warning(
            "this source role cannot see other roles' transactions in pg_stat_activity "
            "(grant pg_read_all_stats); assuming transactions commit within %s",
            fallback_lag,
        )
        if warned is not None:
            warned.add(HIDDEN_WARNING)
    cursor = next_cursor(
        clock=clock, oldest_xact=oldest, sees_all=bool(sees_all), fallback_lag=fallback_lag
    )
    return Watermark(clock=clock, oldest_xact=oldest, sees_all=bool(sees_all), cursor=cursor)


def _truncate_ms(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def picks(updated_at: dt.datetime | None, since: dt.datetime | None) -> bool:
    """The read rule (pure): whether a read from cursor ``since`` takes a row last updated at
    ``updated_at``. No cursor (a first or full read): every row. Else the rows updated at or
    after the cursor (the boundary is re-read: rows committed late in the cursor's millisecond),
    and every row whose ``updated_at`` is NULL, which cannot be placed in time.
    :func:`select_rows` writes the same rule in SQL."""
    return since is None or updated_at is None or updated_at >= since


def select_rows(spec: TableSpec, since: dt.datetime | None) -> sql.Composed:
    """``SELECT <contract columns> FROM operations.<t>`` with the incremental filter
    (:func:`picks`, in SQL).

    NULL ``updated_at`` rows cannot be placed in time: every incremental read takes them.
    """
    query = select_all(spec)
    if since is None:
        return query
    return sql.SQL("{} WHERE updated_at >= {} OR updated_at IS NULL").format(
        query, sql.Literal(since)
    )


def max_updated_at(
    conn: Conn, spec: TableSpec, *, only_indexed: bool = False
) -> dt.datetime | None:
    """``max(updated_at)``: one step down the updated_at index when it exists.

    ``only_indexed``: None when no index has updated_at first, instead of a sequential
    scan (what a sync records per table: on the production DDL the scan doubled the
    source blocks each cursor cycle read; ``status`` still computes it on demand).
    """
    if only_indexed and not conn.execute(UPDATED_AT_INDEXED_SQL, (SCHEMA, [spec.name])).fetchone():
        return None
    cur = conn.cursor()
    load_infinity(cur)  # a row's updated_at may be 'infinity'
    found = cur.execute(
        sql.SQL("SELECT max(updated_at) FROM {}").format(sql.Identifier(SCHEMA, spec.name))
    ).fetchone()
    value = None if found is None else found[0]
    if value is not None and not isinstance(value, dt.datetime):
        raise UnexpectedResult(f"max(updated_at) of {spec.qualified} is {value!r}, not a timestamp")
    return value
