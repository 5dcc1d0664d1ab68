"""Refresh the analytics reports at the cost of what changed since the previous refresh.

Every sync batch writes its signed deltas per report group (``analytics.*_delta``,
see :mod:`acme_mv.staging.apply`). The reports are two summary tables per report
that the union views add up:

- ``analytics.*_historic``: the sum of the deltas of every batch <= ``B``
  (``analytics.snapshot.historic_batch_id``);
- ``analytics.*_current``: the sum of the deltas of the batches in ``(B, R]``,
  ``R`` = ``refreshed_batch_id``, the newest batch the last refresh included.

A refresh adds the deltas of the batches in ``(R, newest committed]`` into the
current tables (``INSERT ... ON CONFLICT``): its cost is the new batches'
delta rows, whatever happened earlier in the day. A rollover (first refresh,
a new day in the configured time zone with ``mode="auto"``, or
``mode="historic"``) then folds the current tables into the historic ones and
empties them: the cost of the day's touched groups, not of history.
``mode="rebuild"`` recomputes the historic tables from scratch from the
latest-state tables (``staging.*_state``) and empties the current ones.

A refresh is ONE transaction (REPEATABLE READ, so the newest batch and its
deltas are read from one snapshot): readers of the union views see the old
reports or the new ones, never a mix, and are never blocked (row writes take
no lock that conflicts with SELECT). A sync --full needs no rebuild: its
batch's deltas retract the keys it found gone.

Refreshes are serialized by a session-level advisory lock taken before the
transaction starts (so the transaction's snapshot is taken after any previous
refresh committed). Its key is the two-integer form ``(ACME, 2)``, a space
that never meets a single-bigint key such as the sync's. Batches are
serialized by the sync lock and draw their ids after taking it, so every batch
at or below the newest committed one has committed: ``(R, newest]`` misses none.
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql
from psycopg.abc import Params, Query

from acme_mv.config import Settings
from acme_mv.db import (
    Conn,
    TaggedCursor,
    UnexpectedResult,
    connection,
    failed_statement,
    first_line,
    is_data_error,
    tag_error,
)
from acme_mv.errors import RefreshFailed
from acme_mv.reports import registry
from acme_mv.revision import require_head
from acme_mv.staging.batch import SOURCE_AT_SQL

log = logging.getLogger(__name__)

#: how a refresh that folded a new day into the historic part begins its reason
DAY_CHANGED = "the day changed"

RefreshMode = Literal["auto", "historic", "current", "rebuild"]

#: advisory lock (two-int form) that serializes refreshes: 'acme' and 2 for "refresh"
LOCK_CLASS = 0x61636D65
LOCK_REFRESH = 2

#: every summary, from the files of views/summaries/ (acme_mv.reports.registry, docs/extending.md):
#: ``<name>_historic``, ``<name>_current`` and ``<name>_delta`` over its keys
SUMMARIES = registry.summaries()

#: each summary from scratch over the latest-state tables (what --rebuild and verify compute):
#: the SQL of views/summaries/<name>.sql
FROM_STATE = {s.name: s.from_state for s in registry.summaries()}


@dataclass(frozen=True, kw_only=True)
class RefreshResult:
    """What one refresh did and how long each part took."""

    #: the historic part changed: folded (rollover) or rebuilt
    rebuilt_historic: bool
    #: why ("" when it did not)
    reason: str
    historic_batch_id: int
    #: the newest committed sync batch included (None: nothing synced yet)
    refreshed_batch_id: int | None
    #: that batch's moment of the source (:data:`acme_mv.staging.batch.SOURCE_AT_SQL`): the
    #: moment the reports are fresh as of, as :func:`acme_mv.run.health.read_freshness` reads it
    refreshed_batch_at: datetime | None
    day: date
    historic_seconds: float | None
    current_seconds: float
    total_seconds: float
    #: batches whose deltas this refresh added (the work is their delta rows)
    new_batches: int = 0
    #: delta rows read
    delta_rows: int = 0


@dataclass(frozen=True)
class _Snapshot:
    historic_batch_id: int | None
    refreshed_batch_id: int | None
    day: date | None


def today(settings: Settings, now: datetime | None = None) -> date:
    """The day of ``now`` (default: the clock) in the configured time zone."""
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return moment.astimezone(ZoneInfo(settings.timezone)).date()


def refresh(
    settings: Settings,
    *,
    mode: RefreshMode = "auto",
    now: datetime | None = None,
    conn: Conn | None = None,
) -> RefreshResult:
    """Refresh the reports (see the module docstring for when the historic part is folded).

    ``conn``: an autocommit warehouse connection to refresh on instead of a new one (a
    process that refreshes after every batch keeps one: the connect is most of a small
    refresh's time). A refresh that fails closes it, since its session may still hold the
    refresh lock or an open transaction; the caller opens a new one.

    Round trips are few, since on a busy server each one waits for a CPU: after the connect
    and the revision check: the lock; the transaction's start with the reads of the snapshot
    row and the newest batch (one pipeline); the writes (one pipeline, skipped when there is
    no new batch and nothing to fold); the snapshot row's update; the commit and the unlock
    (one pipeline).
    """
    try:
        if conn is None:
            with connection(settings.database_url, role="warehouse", autocommit=True) as new:
                return _refresh(new, settings, mode=mode, now=now)
        try:
            return _refresh(conn, settings, mode=mode, now=now)
        except BaseException:
            conn.close()
            raise
    except psycopg.Error as exc:
        if not is_data_error(exc):
            raise
        raise _refresh_failed(exc) from exc


def _refresh_failed(exc: psycopg.Error) -> RefreshFailed:
    """One line naming the summary table and its key for a refresh that failed on the data."""
    table = exc.diag.table_name
    schema = exc.diag.schema_name or registry.SCHEMA
    if table:
        qualified = f"{schema}.{table}"
    else:  # not every error names its table: the statement that failed does
        found = re.search(rf"\b{registry.SCHEMA}\.\w+", failed_statement(exc))
        qualified = found[0] if found else "a summary table"
    summary = next(
        (
            s
            for s in SUMMARIES
            if qualified in {f"{registry.SCHEMA}.{s.name}_{p}" for p in ("historic", "current")}
        ),
        None,
    )
    key = summary.keys if summary else ()
    reason = first_line(Exception(exc.diag.message_primary or str(exc)))
    detail = first_line(Exception(exc.diag.message_detail or ""))
    if len(detail) > DETAIL_SHOWN:
        detail = detail[:DETAIL_SHOWN] + "..."
    return RefreshFailed(
        f"The refresh failed on the data of {qualified} (key ({', '.join(key)})): {reason}"
        f"{'; ' + detail if detail else ''}; nothing was kept, the reports stay as they were",
        table=qualified,
        key=key,
    )


#: characters of the server's detail (it may quote a whole row) a RefreshFailed message shows
DETAIL_SHOWN = 200


def _refresh(
    conn: Conn, settings: Settings, *, mode: RefreshMode, now: datetime | None
) -> RefreshResult:
    day = today(settings, now)
    started = time.perf_counter()
    require_head(conn)
    # an error ends the session (refresh() closes the connection): its transaction rolls back
    # and its session lock is released with it
    with _tagged(conn), conn.pipeline() as pipeline:
        snap, newest = _lock_and_read(conn)
        _ran(conn)
        reason = _fold_reason(snap, mode=mode, day=day)
        historic_s: float | None = None
        new_batches = delta_rows = 0
        t1 = time.perf_counter()
        if mode == "rebuild":
            log.info("rebuilding the reports from the latest-state tables")
            _rebuild(conn)
            pipeline.sync()
            _ran(conn)
            historic_s = time.perf_counter() - t1
            current_s = 0.0
        else:
            added = _add_deltas(conn, _included(snap), newest)
            if reason:
                log.info("folding the current part into the historic part: %s", reason)
                _fold(conn)
            if added or reason:
                pipeline.sync()
                _ran(conn)
            new_batches, delta_rows = _added(added)
            current_s = time.perf_counter() - t1
            if reason:
                historic_s = current_s
    # the snapshot row's update waits for a lock when a reader holds the row (or a blocker
    # the table): outside the pipeline, so that a session ended while it waits reports the
    # server's reason (psycopg's pipeline only sees the connection go)
    if reason:
        _take_snapshot(conn, newest, day=day, timezone=settings.timezone)
    recorded = _record(
        conn, newest, rebuilt=bool(reason), historic_s=historic_s, current_s=current_s
    )
    with _tagged(conn), conn.pipeline():
        conn.execute("COMMIT")
        conn.execute(_UNLOCK, (LOCK_CLASS, LOCK_REFRESH))
    # committed and unlocked
    result = _result(
        recorded,
        newest,
        rebuilt=bool(reason),
        reason=reason,
        day=day if reason else (snap.day or day),
        historic_s=historic_s,
        current_s=current_s,
        started=started,
        new_batches=new_batches,
        delta_rows=delta_rows,
    )
    log.debug(  # `refresh` prints its result and `run` its cycle line: no second INFO line
        "refreshed %s in %.2fs (%d new batches, %d delta rows; B=%d, up to batch %s)",
        f"and folded ({result.reason})" if result.rebuilt_historic else "current",
        result.total_seconds,
        result.new_batches,
        result.delta_rows,
        result.historic_batch_id,
        result.refreshed_batch_id,
    )
    return result


_TRY_LOCK = "SELECT pg_try_advisory_lock(%s, %s)"
_LOCK = "SELECT pg_advisory_lock(%s, %s)"
_UNLOCK = "SELECT pg_advisory_unlock(%s, %s)"
#: explicit, not psycopg's transaction(): in a pipeline with statements still in flight,
#: psycopg cannot tell that no transaction is open and would start a savepoint instead
_BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ"
_SNAPSHOT = "SELECT historic_batch_id, refreshed_batch_id, day FROM analytics.snapshot"
_NEWEST = "SELECT coalesce(max(batch_id), 0) FROM staging.sync_batches"


class _Remembering(TaggedCursor):
    """A :class:`TaggedCursor` that remembers the statements queued on its connection: a
    pipeline's error surfaces when the pipeline syncs, and names no statement."""

    def execute(
        self,
        query: Query,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> _Remembering:
        _QUEUED.setdefault(self.connection, []).append(query)
        super().execute(query, params, prepare=prepare, binary=binary)
        return self


#: the statements queued on each refresh connection (dropped with the connection)
_QUEUED: weakref.WeakKeyDictionary[psycopg.Connection[Any], list[Query]] = (
    weakref.WeakKeyDictionary()
)


@contextmanager
def _tagged(conn: Conn) -> Iterator[None]:
    """Mark an error of the pipeline as this connection's, with the first statement queued
    since the last sync that names the relation it complains about (for the privilege it
    needed), so that it becomes acme-mv's one-line error."""
    conn.cursor_factory = _Remembering
    try:
        yield
    except psycopg.Error as exc:
        queued = _QUEUED.get(conn, [])
        named = [q for q in queued if _names(conn, q, exc)]
        tag_error(exc, conn, _text(conn, (named or queued or ["refresh"])[0]))
        raise


def _ran(conn: Conn) -> None:
    """The statements queued so far ran: an error from now on is a later one's."""
    _QUEUED.pop(conn, None)


def _text(conn: Conn, query: Query) -> str:
    if isinstance(query, sql.Composable):
        return query.as_string(conn)
    return query.decode() if isinstance(query, bytes) else str(query)


def _names(conn: Conn, query: Query, exc: psycopg.Error) -> bool:
    """Whether ``query`` writes or reads the relation the error message names."""
    message = exc.diag.message_primary or ""
    relation = message.rsplit(" ", 1)[-1].strip('"') if "permission denied for" in message else ""
    return bool(relation) and relation in _text(conn, query)


def _lock_and_read(conn: Conn) -> tuple[_Snapshot, int]:
    """Take the refresh lock, then open the REPEATABLE READ transaction and read the snapshot
    row and the newest committed batch in it (two round trips when the lock is free).

    The lock is session-level and taken before the transaction, whose snapshot (its first
    SELECT) then sees any previous refresh committed: a refresh commits before it unlocks.
    The try stays a round trip of its own: a statement queued before BEGIN in the same
    pipeline would share its implicit transaction (BEGIN ISOLATION LEVEL then fails) and a
    COMMIT between them warns in the server log. The transaction stays open for the caller.
    """
    with conn.pipeline():  # a nested pipeline: syncs when it ends
        got = conn.execute(_TRY_LOCK, (LOCK_CLASS, LOCK_REFRESH))
    row = got.fetchone()
    if not (row and row[0]):
        log.info("another refresh is running; waiting for it to finish")
        with conn.pipeline():
            conn.execute(_LOCK, (LOCK_CLASS, LOCK_REFRESH))
    conn.execute(_BEGIN)
    snap_cur = conn.execute(_SNAPSHOT)
    newest_cur = conn.execute(_NEWEST)
    return _snapshot(snap_cur.fetchone()), _first_int(newest_cur.fetchone())


def _int(value: object) -> int | None:
    """A bigint column that may be NULL; anything else is a bug, not a 0."""
    if value is None or isinstance(value, int):
        return value
    raise UnexpectedResult(f"expected a bigint or NULL, got {value!r}")


def _first_int(row: tuple[object, ...] | None) -> int:
    """The one value of a one-row count or coalesce(max(...), 0): never NULL."""
    value = _int(row[0]) if row else None
    if value is None:
        raise UnexpectedResult(f"expected one bigint row, got {row!r}")
    return value


def _snapshot(row: tuple[object, ...] | None) -> _Snapshot:
    """The one row of analytics.snapshot (the migration inserts it; its columns are NULL until
    the first refresh)."""
    if row is None:
        raise UnexpectedResult("analytics.snapshot has no row (its migration inserts the one row)")
    batch, refreshed, day = row
    if day is not None and not isinstance(day, date):
        raise UnexpectedResult(f"analytics.snapshot.day is {day!r}")
    return _Snapshot(_int(batch), _int(refreshed), day)


@dataclass(frozen=True, kw_only=True)
class Behind:
    """The reports do not include every committed batch yet."""

    #: the newest batch the reports include (0: none)
    included: int
    #: the newest committed batch
    newest: int


_BEHIND_SQL = """
SELECT coalesce(refreshed_batch_id, historic_batch_id, 0),
       (SELECT coalesce(max(batch_id), 0) FROM staging.sync_batches)
FROM analytics.snapshot
"""


def behind(conn: Conn) -> Behind | None:
    """Whether a batch committed after the last refresh began (a refresh is due), and which."""
    row = conn.execute(_BEHIND_SQL).fetchone()
    if row is None:
        raise UnexpectedResult("analytics.snapshot has no row (its migration inserts the one row)")
    included, newest = _first_int(row[:1]), _first_int(row[1:])
    return Behind(included=included, newest=newest) if newest > included else None


def _included(snap: _Snapshot) -> int:
    """The newest batch whose deltas the summary tables hold (0: none)."""
    if snap.refreshed_batch_id is not None:
        return snap.refreshed_batch_id
    return snap.historic_batch_id or 0


def _fold_reason(snap: _Snapshot, *, mode: RefreshMode, day: date) -> str:
    """Why the historic part changes now, or "" when only the current part moves."""
    if mode == "rebuild":
        return "asked for (--rebuild)"
    if snap.historic_batch_id is None:
        return "first refresh"
    if mode == "historic":
        return "asked for (--historic)"
    if mode == "auto" and snap.day != day:
        return f"{DAY_CHANGED} ({snap.day} -> {day})"
    return ""


def _add_deltas(conn: Conn, since: int, upto: int) -> list[psycopg.Cursor[tuple[object, ...]]]:
    """Queue current += the deltas of the batches in (since, upto]; nothing when there are none.

    Returns the queued statements' cursors: the summaries' INSERTs, then the batch count
    (read them with :func:`_added` once the pipeline has run).
    """
    if upto <= since:
        return []
    cursors = [
        conn.execute(
            sql.SQL(
                "INSERT INTO {current} AS c ({cols}, n) "
                "SELECT {cols}, sum(d.n) FROM {delta} AS d "
                "WHERE d.batch_id > %(since)s AND d.batch_id <= %(upto)s GROUP BY {cols} "
                "ON CONFLICT ({unique}) DO UPDATE SET n = c.n + EXCLUDED.n"
            ).format(
                current=s.table("current"),
                delta=s.table("delta"),
                cols=s.columns,
                unique=s.conflict,
            ),
            {"since": since, "upto": upto},
        )
        # groups that fell back to 0 stay until the fold (the union views drop them): deleting
        # them here would scan the current table, a cost that grows over the day
        for s in SUMMARIES
    ]
    cursors.append(
        conn.execute(
            "SELECT count(*) FROM staging.sync_batches WHERE batch_id > %s AND batch_id <= %s",
            (since, upto),
        )
    )
    return cursors


def _added(cursors: list[psycopg.Cursor[tuple[object, ...]]]) -> tuple[int, int]:
    """(batches, delta rows) of :func:`_add_deltas`' statements, after they ran."""
    if not cursors:
        return 0, 0
    *inserts, count = cursors
    return _first_int(count.fetchone()), sum(max(c.rowcount, 0) for c in inserts)


def _fold(conn: Conn) -> None:
    """historic += current; current := empty. Costs the groups the current part touched."""
    for s in SUMMARIES:
        conn.execute(
            sql.SQL(
                "INSERT INTO {historic} AS h ({cols}, n) SELECT {cols}, n FROM {current} "
                "ON CONFLICT ({unique}) DO UPDATE SET n = h.n + EXCLUDED.n"
            ).format(
                historic=s.table("historic"),
                current=s.table("current"),
                cols=s.columns,
                unique=s.conflict,
            )
        )
        conn.execute(sql.SQL("DELETE FROM {} WHERE n = 0").format(s.table("historic")))
        # DELETE, not TRUNCATE: TRUNCATE's ACCESS EXCLUSIVE lock would block the readers
        conn.execute(sql.SQL("DELETE FROM {}").format(s.table("current")))


def _rebuild(conn: Conn) -> None:
    """historic := every summary from scratch over the latest-state tables; current := empty."""
    for s in SUMMARIES:
        conn.execute(sql.SQL("DELETE FROM {}").format(s.table("historic")))
        conn.execute(sql.SQL("DELETE FROM {}").format(s.table("current")))
        conn.execute(
            sql.SQL("INSERT INTO {} ({}, n) {}").format(
                s.table("historic"), s.columns, sql.SQL(FROM_STATE[s.name])
            )
        )


def _take_snapshot(conn: Conn, newest: int, *, day: date, timezone: str) -> None:
    conn.execute(
        "UPDATE analytics.snapshot"
        " SET historic_batch_id = %s, taken_at = now(), day = %s, timezone = %s",
        (newest, day, timezone),
    )


def _record(
    conn: Conn,
    newest: int,
    *,
    rebuilt: bool,
    historic_s: float | None,
    current_s: float,
) -> psycopg.Cursor[tuple[object, ...]]:
    """Queue the snapshot row's update; its cursor gives (historic batch, the batch's time)."""
    query = sql.SQL(
        """
        UPDATE analytics.snapshot AS s
        SET refreshed_at = now(),
            refreshed_batch_id = %(newest)s,
            refresh_mode = %(mode)s,
            historic_seconds = coalesce(%(historic_s)s, s.historic_seconds),
            current_seconds = %(current_s)s
        RETURNING s.historic_batch_id,
                  (SELECT {source_at} FROM staging.sync_batches AS b
                   WHERE b.batch_id = %(newest)s)
        """
    ).format(source_at=sql.SQL(SOURCE_AT_SQL))  # a constant of the staging core
    return conn.execute(
        query,
        {
            "newest": newest,
            "mode": "historic" if rebuilt else "current",
            "historic_s": historic_s,
            "current_s": current_s,
        },
    )


def _result(
    recorded: psycopg.Cursor[tuple[object, ...]],
    newest: int,
    *,
    rebuilt: bool,
    reason: str,
    day: date,
    historic_s: float | None,
    current_s: float,
    started: float,
    new_batches: int,
    delta_rows: int,
) -> RefreshResult:
    row = recorded.fetchone()
    if row is None:
        raise UnexpectedResult("analytics.snapshot has no row (its migration inserts the one row)")
    # the first refresh takes the snapshot: its batch is never NULL here; no batch yet: no time
    historic_batch, batch_at = _int(row[0]), row[1]
    if historic_batch is None or not (batch_at is None or isinstance(batch_at, datetime)):
        raise UnexpectedResult(f"analytics.snapshot after a refresh: {row!r}")
    return RefreshResult(
        rebuilt_historic=rebuilt,
        reason=reason,
        historic_batch_id=historic_batch,
        refreshed_batch_id=newest or None,
        refreshed_batch_at=batch_at,
        day=day,
        historic_seconds=historic_s,
        current_seconds=current_s,
        total_seconds=time.perf_counter() - started,
        new_batches=new_batches,
        delta_rows=delta_rows,
    )
