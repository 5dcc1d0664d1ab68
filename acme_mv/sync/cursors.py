"""The cursor sync's bookkeeping in the warehouse: each table's cursor and last run.

``staging.sync_state`` holds one row per table, written in the sync's batch
transaction (:func:`acme_mv.staging.batch.open_batch`), so the new cursors
become visible with the batch's rows or not at all.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from acme_mv.db import Conn, is_infinite, show_timestamp


def saved(conn: Conn) -> dict[str, dt.datetime | None]:
    """Each table's cursor (None: never synced)."""
    return {
        str(name): value
        for name, value in conn.execute(
            "SELECT table_name, cursor_value FROM staging.sync_state"
        ).fetchall()
    }


@dataclass(frozen=True, kw_only=True)
class TableRun:
    """One table's figures in one batch, as stored in ``staging.sync_state``."""

    table: str
    cursor: dt.datetime
    batch_id: int
    started_at: dt.datetime
    seconds: float
    rows_read: int
    rows_new: int
    source_max_updated_at: dt.datetime | None
    mode: str


_SAVE_SQL = """
INSERT INTO staging.sync_state AS s (
    table_name, cursor_value, last_batch_id, last_started_at, last_finished_at, last_duration_s,
    last_rows_read, last_rows_copied, last_source_max_updated_at, last_mode)
VALUES (%(table)s, %(cursor)s, %(batch_id)s, %(started_at)s, clock_timestamp(), %(seconds)s,
        %(rows_read)s, %(rows_new)s, %(source_max)s, %(mode)s)
ON CONFLICT (table_name) DO UPDATE SET
    cursor_value = EXCLUDED.cursor_value,
    last_batch_id = EXCLUDED.last_batch_id,
    last_started_at = EXCLUDED.last_started_at,
    last_finished_at = EXCLUDED.last_finished_at,
    last_duration_s = EXCLUDED.last_duration_s,
    last_rows_read = EXCLUDED.last_rows_read,
    last_rows_copied = EXCLUDED.last_rows_copied,
    last_source_max_updated_at = EXCLUDED.last_source_max_updated_at,
    last_mode = EXCLUDED.last_mode
"""


def save(conn: Conn, run: TableRun) -> None:
    source_max = run.source_max_updated_at
    conn.execute(
        _SAVE_SQL,
        {
            "table": run.table,
            "cursor": run.cursor,
            "batch_id": run.batch_id,
            "started_at": run.started_at,
            "seconds": run.seconds,
            "rows_read": run.rows_read,
            "rows_new": run.rows_new,
            # 'infinity' stays infinity (load_infinity loads it as datetime.max)
            "source_max": (
                show_timestamp(source_max)
                if source_max is not None and is_infinite(source_max)
                else source_max
            ),
            "mode": run.mode,
        },
    )
