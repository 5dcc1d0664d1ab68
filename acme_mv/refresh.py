"""Refresh the analytics views: the historic part once a day, the current-day part every time.

The historic materialized views hold the reports as of a snapshot batch ``B``
(``analytics.snapshot.historic_batch_id``); the current-day ones hold the
signed change since ``B``, computed from the keys staged after ``B`` only.
A refresh therefore costs what changed since ``B``, except when the historic
part is rebuilt:

- on the first refresh (never snapshotted);
- when the day in the configured time zone differs from the snapshot's day
  (``mode="auto"``), so that the current-day part stays small;
- when a sync batch after ``B`` re-copied a table from scratch (``--full``):
  the rows as of ``B`` are gone, the deltas would double count. This one is
  applied in every mode, ``current`` included, because it is about
  correctness;
- when asked (``mode="historic"``).

A rebuild is ONE transaction: ``B`` := the newest committed batch, then
``REFRESH MATERIALIZED VIEW CONCURRENTLY`` of the historic views and then of
the current-day views. Every refresh runs in a REPEATABLE READ transaction so
that every view is computed on one staging snapshot; readers of the union
views see the old state or the new one, never a mix, and are never blocked
(CONCURRENTLY takes no lock that conflicts with SELECT).

Refreshes are serialized by a session-level advisory lock taken before the
transaction starts (so the transaction's snapshot is taken after any previous
refresh committed). Its key is the two-integer form ``(ACME, 2)``, a space
that never meets a single-bigint key such as the sync's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from acme_mv.config import Settings
from acme_mv.db import connection
from acme_mv.migrate import require_head

log = logging.getLogger(__name__)

RefreshMode = Literal["auto", "historic", "current"]

#: advisory lock (two-int form) that serializes refreshes: 'acme' and 2 for "refresh"
LOCK_CLASS = 0x61636D65
LOCK_REFRESH = 2

HISTORIC = ("open_orders_historic", "pending_items_historic", "pending_orders_historic")
CURRENT = ("open_orders_current", "pending_items_current", "pending_orders_current")
SCHEMA = "analytics"


@dataclass(frozen=True, kw_only=True)
class RefreshResult:
    """What one refresh did and how long each part took."""

    rebuilt_historic: bool
    #: why the historic part was rebuilt ("" when it was not)
    reason: str
    historic_batch_id: int
    #: the newest committed sync batch included (None: nothing synced yet)
    refreshed_batch_id: int | None
    #: when that batch was recorded (the sync's time: the base of freshness)
    refreshed_batch_at: datetime | None
    day: date
    historic_seconds: float | None
    current_seconds: float
    total_seconds: float


@dataclass(frozen=True)
class _Snapshot:
    historic_batch_id: int | None
    day: date | None


Conn = psycopg.Connection[tuple[object, ...]]


def today(settings: Settings, now: datetime | None = None) -> date:
    """The day of ``now`` (default: the clock) in the configured time zone."""
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return moment.astimezone(ZoneInfo(settings.timezone)).date()


def refresh(settings: Settings, *, mode: RefreshMode = "auto", now: datetime | None = None) -> RefreshResult:
    """Refresh the analytics views (see the module docstring for when the historic part is rebuilt)."""
    day = today(settings, now)
    started = time.perf_counter()
    with connection(settings.database_url, role="warehouse", autocommit=True) as conn:
        require_head(conn)
        with _refresh_lock(conn):
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.transaction():
                # before any snapshot is taken: wait out a TRUNCATE (sync --full) in flight
                conn.execute("LOCK TABLE staging.orders, staging.order_items IN ACCESS SHARE MODE")
                snap = _read_snapshot(conn)
                reason = _rebuild_reason(conn, snap, mode=mode, day=day)
                historic_s: float | None = None
                if reason:
                    log.info("rebuilding the historic views: %s", reason)
                    t0 = time.perf_counter()
                    _take_snapshot(conn, day=day, timezone=settings.timezone)
                    _refresh_all(conn, HISTORIC)
                    historic_s = time.perf_counter() - t0
                t1 = time.perf_counter()
                _refresh_all(conn, CURRENT)
                current_s = time.perf_counter() - t1
                result = _record(
                    conn,
                    rebuilt=bool(reason),
                    reason=reason,
                    day=day if reason else (snap.day or day),
                    historic_s=historic_s,
                    current_s=current_s,
                    started=started,
                )
    log.debug(  # `refresh` prints its result and `run` its cycle line: no second INFO line
        "refreshed %s views in %.2fs (B=%d, up to batch %s)",
        "historic + current" if result.rebuilt_historic else "current",
        result.total_seconds,
        result.historic_batch_id,
        result.refreshed_batch_id,
    )
    return result


@contextmanager
def _refresh_lock(conn: Conn) -> Iterator[None]:
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, LOCK_REFRESH)).fetchone()
    if not (row and row[0]):
        log.info("another refresh is running; waiting for it to finish")
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, LOCK_REFRESH))
    try:
        yield
    finally:
        if not conn.closed and not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, LOCK_REFRESH))


def _read_snapshot(conn: Conn) -> _Snapshot:
    row = conn.execute("SELECT historic_batch_id, day FROM analytics.snapshot").fetchone()
    if row is None:
        return _Snapshot(None, None)
    batch, day = row
    return _Snapshot(
        int(batch) if isinstance(batch, int) else None,
        day if isinstance(day, date) else None,
    )


def _rebuild_reason(conn: Conn, snap: _Snapshot, *, mode: RefreshMode, day: date) -> str:
    """Why the historic part must be rebuilt now, or "" when the current part suffices."""
    if snap.historic_batch_id is None:
        return "first refresh"
    full = conn.execute(
        "SELECT batch_id, full_tables FROM staging.sync_batches "
        "WHERE batch_id > %s AND full_tables <> '{}' ORDER BY batch_id LIMIT 1",
        (snap.historic_batch_id,),
    ).fetchone()
    if full is not None:
        tables = ", ".join(str(t) for t in full[1]) if isinstance(full[1], list) else str(full[1])
        return f"batch {full[0]} re-copied {tables} from scratch"
    if mode == "historic":
        return "asked for (--historic)"
    if mode == "auto" and snap.day != day:
        return f"the day changed ({snap.day} -> {day})"
    return ""


def _take_snapshot(conn: Conn, *, day: date, timezone: str) -> None:
    conn.execute(
        "UPDATE analytics.snapshot SET historic_batch_id = "
        "(SELECT coalesce(max(batch_id), 0) FROM staging.sync_batches), "
        "taken_at = now(), day = %s, timezone = %s",
        (day, timezone),
    )


def _refresh_all(conn: Conn, names: tuple[str, ...]) -> None:
    for name in names:
        conn.execute(
            sql.SQL("REFRESH MATERIALIZED VIEW CONCURRENTLY {}").format(sql.Identifier(SCHEMA, name))
        )


def _record(
    conn: Conn,
    *,
    rebuilt: bool,
    reason: str,
    day: date,
    historic_s: float | None,
    current_s: float,
    started: float,
) -> RefreshResult:
    row = conn.execute(
        """
        UPDATE analytics.snapshot AS s
        SET refreshed_at = now(),
            refreshed_batch_id = b.batch_id,
            refresh_mode = %(mode)s,
            historic_seconds = coalesce(%(historic_s)s, s.historic_seconds),
            current_seconds = %(current_s)s
        FROM (SELECT max(batch_id) AS batch_id FROM staging.sync_batches) AS b
        RETURNING s.historic_batch_id, b.batch_id,
                  (SELECT coalesce(finished_at, started_at) FROM staging.sync_batches
                   WHERE batch_id = b.batch_id)
        """,
        {
            "mode": "historic" if rebuilt else "current",
            "historic_s": historic_s,
            "current_s": current_s,
        },
    ).fetchone()
    assert row is not None  # the migration inserts the one row
    historic_batch, batch, batch_at = row
    return RefreshResult(
        rebuilt_historic=rebuilt,
        reason=reason,
        historic_batch_id=int(historic_batch) if isinstance(historic_batch, int) else 0,
        refreshed_batch_id=int(batch) if isinstance(batch, int) else None,
        refreshed_batch_at=batch_at if isinstance(batch_at, datetime) else None,
        day=day,
        historic_seconds=historic_s,
        current_seconds=current_s,
        total_seconds=time.perf_counter() - started,
    )
