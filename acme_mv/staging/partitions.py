"""The partitions of the version tables (``staging.orders``, ``staging.order_items``).

Both are partitioned by RANGE of ``_batch_id`` (revision 0003). The partitions
are contiguous and recorded in ``staging.version_partitions``; the batch that
finds no partition for its id creates the next one, ``[previous end, id +
width)``, in its own transaction (rolled back with it). The width is the number
of batches drawn in the last :data:`SPAN` (at least :data:`MIN_BATCHES`), so a
partition holds about a day of versions at the current sync rate, whatever the
interval: compaction then drops whole days.

A new partition is created as a plain table and ATTACHed: that takes SHARE
UPDATE EXCLUSIVE on the parent, which blocks no reader and no writer.
"""

from __future__ import annotations

import datetime as dt
import logging

from psycopg import sql

from acme_mv.db import Conn, one_value

log = logging.getLogger(__name__)

#: the version tables, partitioned by _batch_id
TABLES = ("orders", "order_items")
#: a new partition is sized to hold this long of batches at the recent rate
SPAN = dt.timedelta(days=1)
#: ... and at least this many batches
MIN_BATCHES = 64


def ensure(conn: Conn, batch_id: int) -> None:
    """Make sure a partition of each version table holds ``batch_id`` (call under the sync lock)."""
    for table in TABLES:
        row = conn.execute(
            "SELECT max(to_batch), bool_or(from_batch <= %(b)s AND %(b)s < to_batch) "
            "FROM staging.version_partitions WHERE table_name = %(t)s",
            {"b": batch_id, "t": table},
        ).fetchone()
        assert row is not None
        end, covered = row
        if covered:
            continue
        start = int(end) if end is not None else batch_id
        width = _width(conn)
        create(conn, table, start, max(batch_id + width, start + 1))


def _width(conn: Conn) -> int:
    recent = one_value(
        conn,
        "SELECT count(*) FROM staging.sync_batches WHERE started_at > clock_timestamp() - %s",
        (SPAN,),
        kind=int,
    )
    return max(MIN_BATCHES, recent)


def create(conn: Conn, table: str, start: int, end: int) -> str:
    """Create and attach ``staging.<table>_b<start>`` for batches ``[start, end)``."""
    name = f"{table}_b{start}"
    parent = sql.Identifier("staging", table)
    child = sql.Identifier("staging", name)
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(child, parent))
    conn.execute(
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            parent, child, sql.Literal(start), sql.Literal(end)
        )
    )
    conn.execute(
        "INSERT INTO staging.version_partitions (table_name, partition_name, from_batch, to_batch) "
        "VALUES (%s, %s, %s, %s)",
        (table, name, start, end),
    )
    log.debug("staging.%s: new partition %s for batches [%d, %d)", table, name, start, end)
    return name
