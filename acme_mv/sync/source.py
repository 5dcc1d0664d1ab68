"""The source side of a sync: the contract's tables, drift checks, locks, the cursor window.

The contract (``operations.*``) is written down here as data: every column
with its exact type, because the COPY is binary and binary COPY only works
between identical types. :func:`check_schema` compares the source with it
before anything is copied.

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
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.rows import scalar_row

from acme_mv.db import Conn, optional_value
from acme_mv.errors import Busy, SchemaDrift

log = logging.getLogger(__name__)

TableName = Literal["customers", "products", "orders", "order_items"]
#: ``append``: every version kept, incremental by cursor; ``mirror``: reloaded whole
Kind = Literal["append", "mirror"]

SCHEMA = "operations"

#: what ``format_type`` prints for the contract's types
_TS = "timestamp(3) without time zone"
_AUDIT = (
    ("updated_at", _TS),
    ("updated_by", "bigint"),
    ("created_at", _TS),
    ("created_by", "bigint"),
)

#: ``CURRENT_TIMESTAMP(3)`` rounds to the millisecond (up to 0.5 ms later than the
#: transaction start) and a backend publishes its ``xact_start`` a moment after it
#: took that timestamp; one second covers both with room to spare, and only costs
#: re-reading (and deduplicating) one more second of rows per sync.
SAFETY_MARGIN = dt.timedelta(seconds=1)

#: used instead of pg_stat_activity when this role cannot see other roles'
#: ``xact_start`` (no ``pg_read_all_stats``): writers' transactions are assumed to
#: commit within this long after they start
DEFAULT_FALLBACK_LAG = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class TableSpec:
    name: TableName
    key: str
    kind: Kind
    columns: tuple[tuple[str, str], ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)

    @property
    def qualified(self) -> str:
        return f"{SCHEMA}.{self.name}"


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "customers",
            "customer_id",
            "mirror",
            (
                ("customer_id", "bigint"),
                ("customer_name", "character varying(500)"),
                ("is_active", "boolean"),
                ("customer_address", "character varying(500)"),
                *_AUDIT,
            ),
        ),
        TableSpec(
            "products",
            "product_id",
            "mirror",
            (
                ("product_id", "bigint"),
                ("product_name", "character varying(500)"),
                ("barcode", "character varying(26)"),
                ("unity_price", "numeric"),
                ("is_active", "boolean"),
                *_AUDIT,
            ),
        ),
        TableSpec(
            "orders",
            "order_id",
            "append",
            (
                ("order_id", "bigint"),
                ("order_date", "date"),
                ("delivery_date", "date"),
                ("customer_id", "bigint"),
                ("status", "character varying"),
                *_AUDIT,
            ),
        ),
        TableSpec(
            "order_items",
            "order_item_id",
            "append",
            (
                ("order_item_id", "bigint"),
                ("order_id", "bigint"),
                ("product_id", "bigint"),
                ("quanity", "integer"),
                *_AUDIT,
            ),
        ),
    )
}

_COLUMNS_SQL = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')
"""

_UPDATED_AT_INDEXED_SQL = """
SELECT c.relname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
WHERE n.nspname = %s AND c.relname = ANY(%s) AND a.attname = 'updated_at' AND i.indisvalid
"""


def _no_table(spec: TableSpec) -> SchemaDrift:
    return SchemaDrift(
        f"The source has no table {spec.qualified}: sync needs the contract's tables "
        f"(is ACME_MV_SOURCE_URL the operations database?)",
        table=spec.qualified,
    )


def check_schema(conn: Conn, specs: list[TableSpec]) -> None:
    """Raise :class:`SchemaDrift` unless every table and column matches the contract.

    Columns the contract does not state are ignored (the sync selects the
    contract's columns by name), so a column added at the source is harmless.
    """
    names = [s.name for s in specs]
    found: dict[str, dict[str, str]] = {}
    for table, column, type_ in conn.execute(_COLUMNS_SQL, (SCHEMA, names)).fetchall():
        table_cols = found.setdefault(str(table), {})
        if column is not None:
            table_cols[str(column)] = str(type_)
    for spec in specs:
        cols = found.get(spec.name)
        if cols is None:
            raise _no_table(spec)
        for column, expected in spec.columns:
            actual = cols.get(column)
            if actual is None:
                raise SchemaDrift(
                    f"The source table {spec.qualified} has no "
                    f"column {column} ({expected}) that the "
                    f"contract states; restore it or update acme-mv",
                    table=spec.qualified,
                    column=column,
                    expected=expected,
                )
            if actual != expected:
                raise SchemaDrift(
                    f"The source column {spec.qualified}.{column} is {actual}, the contract states "
                    f"{expected}; sync copies in binary and needs the exact type",
                    table=spec.qualified,
                    column=column,
                    expected=expected,
                    actual=actual,
                )
    indexed = set(
        conn.cursor(row_factory=scalar_row)
        .execute(_UPDATED_AT_INDEXED_SQL, (SCHEMA, names))
        .fetchall()
    )
    for spec in specs:
        if spec.kind == "append" and spec.name not in indexed:
            log.warning(
                "%s has no index on updated_at: every incremental read scans the table "
                "(CREATE INDEX CONCURRENTLY ON %s (updated_at))",
                spec.qualified,
                spec.qualified,
            )


#: how long a sync waits, in all, for source tables another session holds
#: locked (a rewrite in progress): long enough for an ALTER TABLE that rewrites
#: tens of millions of rows, short enough that a forgotten open DDL
#: transaction makes the sync fail with a clear message instead of hanging
DEFAULT_LOCK_TIMEOUT = dt.timedelta(minutes=10)


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
        except psycopg.errors.UndefinedTable:
            raise _no_table(spec) from None
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
        except psycopg.errors.UndefinedTable:  # dropped while we waited
            raise _no_table(spec) from None
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
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names),
        sql.Identifier(SCHEMA, spec.name),
    )
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
    if only_indexed and not conn.execute(_UPDATED_AT_INDEXED_SQL, (SCHEMA, [spec.name])).fetchone():
        return None
    return optional_value(
        conn,
        sql.SQL("SELECT max(updated_at) FROM {}").format(sql.Identifier(SCHEMA, spec.name)),
        kind=dt.datetime,
    )
