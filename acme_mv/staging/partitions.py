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

A first copy (the version table empty) does not write through the parent:
its rows go into a standalone load table ``staging._acme_load_<batch>_<t>``
(:func:`create_sql`: no index, the batch's range as a CHECK), the parent's
indexes are built on it afterwards (:func:`retarget_index`), and
:func:`attach` puts it in place of the batch's empty partition. The serial
path does all of it in the batch's transaction (:func:`acme_mv.staging.copy.load_fresh`),
the parallel one in worker sessions (:mod:`acme_mv.staging.parallel`); a load
table left by a sync that died before its commit is dropped by the next
(:func:`drop_debris`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from psycopg import sql

from acme_mv.db import Conn, one_value
from acme_mv.errors import CopyFailed
from acme_mv.staging.tables import TableSpec

log = logging.getLogger(__name__)

STAGING = "staging"
#: the version tables, partitioned by _batch_id
TABLES = ("orders", "order_items")
#: prefix of the load tables (debris when a sync died before its commit)
LOAD_PREFIX = "_acme_load_"
#: the CHECK constraint that proves a load table's batch range to ATTACH PARTITION
RANGE_CHECK = "_acme_load_batch_range"
#: a new partition is sized to hold this long of batches at the recent rate
SPAN = dt.timedelta(days=1)
#: ... and at least this many batches
MIN_BATCHES = 64


def ensure(conn: Conn, batch_id: int) -> None:
    """Make sure a partition of each version table holds ``batch_id`` (call under the sync lock)."""
    found = {
        str(table): (end, covered)
        for table, end, covered in conn.execute(
            "SELECT table_name, max(to_batch), bool_or(from_batch <= %(b)s AND %(b)s < to_batch) "
            "FROM staging.version_partitions WHERE table_name = ANY(%(t)s) GROUP BY table_name",
            {"b": batch_id, "t": list(TABLES)},
        )
    }
    for table in TABLES:
        end, covered = found.get(table, (None, False))
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


# -- a first copy: a load table attached as the batch's partition -------------------------


@dataclass(frozen=True)
class Target:
    """One version table to load into a new partition for one batch."""

    spec: TableSpec
    #: CREATE INDEX statements of the partitioned table's indexes (built on the load table)
    indexes: tuple[str, ...]
    #: the batch's partition: its name and its range [start, end) of batch ids
    partition: str
    start: int
    end: int

    @property
    def parent(self) -> sql.Identifier:
        return sql.Identifier(STAGING, self.spec.name)


def target(conn: Conn, spec: TableSpec, batch_id: int) -> Target:
    """The partition of ``spec``'s version table that holds ``batch_id`` (which
    :func:`ensure` made sure of), and the partitioned table's indexes."""
    row = conn.execute(
        "SELECT partition_name, from_batch, to_batch FROM staging.version_partitions "
        "WHERE table_name = %(t)s AND from_batch <= %(b)s AND %(b)s < to_batch",
        {"t": spec.name, "b": batch_id},
    ).fetchone()
    if row is None:  # pragma: no cover - open_batch creates it
        raise RuntimeError(f"no partition of staging.{spec.name} holds batch {batch_id}")
    indexes = conn.execute(
        "SELECT pg_get_indexdef(x.indexrelid) FROM pg_index "
        "x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = %s::regclass ORDER BY i.relname",
        (f"{STAGING}.{spec.name}",),
    ).fetchall()
    return Target(
        spec=spec,
        indexes=tuple(str(r[0]) for r in indexes),
        partition=str(row[0]),
        start=int(row[1]),
        end=int(row[2]),
    )


def load_name(batch_id: int, name: str) -> str:
    out = f"{LOAD_PREFIX}{batch_id}_{name}"
    if len(out.encode()) > 63:  # PostgreSQL would cut it silently
        raise ValueError(f"load relation name too long: {out}")
    return out


def load_index_name(batch_id: int, table: str, number: int) -> str:
    """The ``number``-th index of a load table while it is one (renamed when attached)."""
    return f"{load_name(batch_id, table)}_{number}"


def partition_index_name(partition: str, number: int) -> str:
    return f"{partition}_{number}_idx"


def create_sql(load_table: str, table: str, start: int, end: int) -> sql.Composed:
    """The load table: the version table's columns, defaults and checks, no index, and the
    batch range as a CHECK (what ATTACH PARTITION needs to skip its validation scan)."""
    return sql.SQL(
        "CREATE TABLE {load} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
        "CONSTRAINT {check} CHECK (_batch_id >= {start} AND _batch_id < {end}))"
    ).format(
        load=sql.Identifier(STAGING, load_table),
        table=sql.Identifier(STAGING, table),
        check=sql.Identifier(RANGE_CHECK),
        start=sql.Literal(start),
        end=sql.Literal(end),
    )


def retarget_index(definition: str, name: str, table: sql.Identifier) -> sql.Composed:
    """``pg_get_indexdef`` output rewritten to build the same index on ``table`` as ``name``.

    pg_get_indexdef always prints ``CREATE [UNIQUE ]INDEX <name> ON [ONLY ]<table>
    USING <method> (...)...``; everything from `` USING `` on is kept verbatim.
    """
    head, sep, tail = definition.partition(" USING ")
    if not sep or " ON " not in head:
        raise ValueError(f"unexpected index definition: {definition}")
    unique = head.startswith("CREATE UNIQUE INDEX ")
    return sql.SQL("CREATE {}INDEX {} ON {} USING {}").format(
        sql.SQL("UNIQUE " if unique else ""), sql.Identifier(name), table, sql.SQL(tail)
    )


def is_empty(conn: Conn, table: str) -> bool:
    """Whether ``staging.<table>`` holds no row."""
    return one_value(
        conn,
        sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(STAGING, table)),
        kind=bool,
    )


def attach(conn: Conn, target: Target, batch_id: int) -> None:
    """Put the load table of ``batch_id`` in place of the batch's empty partition
    ``target.partition``, with the indexes built on it (``target.indexes``, in order).

    The batch's partition was created empty by this transaction or an earlier
    batch (its table was empty when planned, and the sync lock keeps other
    writers out). The load table's CHECK implies the partition constraint, so
    ATTACH does not scan it, and its indexes equal to the parent's are
    attached, not built; the CHECK is then dropped (catalog only).
    """
    table = target.spec.name
    partition = sql.Identifier(STAGING, target.partition)
    if not is_empty(conn, target.partition):
        raise CopyFailed(
            f"staging.{target.partition} got rows during the load; run the sync again",
            table=table,
        )
    conn.execute(sql.SQL("DROP TABLE {}").format(partition))
    conn.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            sql.Identifier(STAGING, load_name(batch_id, table)), sql.Identifier(target.partition)
        )
    )
    conn.execute(
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            target.parent, partition, sql.Literal(target.start), sql.Literal(target.end)
        )
    )
    conn.execute(
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(partition, sql.Identifier(RANGE_CHECK))
    )
    for number in range(len(target.indexes)):
        conn.execute(
            sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(STAGING, load_index_name(batch_id, table, number)),
                sql.Identifier(partition_index_name(target.partition, number)),
            )
        )


#: the load tables in staging, constants inlined: every batch runs it, and a pattern passed as
#: a parameter is planned anew each time (a generic plan cannot use the prefix on the index)
_DEBRIS = sql.SQL(
    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = {schema} AND c.relkind = 'r' AND c.relname LIKE {pattern} ORDER BY 1"
).format(schema=sql.Literal(STAGING), pattern=sql.Literal(LOAD_PREFIX.replace("_", r"\_") + "%"))


def drop_debris(conn: Conn) -> list[str]:
    """Drop the load tables of syncs that died before their commit; return their names.

    Call it holding the sync lock: no other sync's workers are alive then (a
    dead sync's server-side statements still running only delay the DROP).
    """
    rows = conn.execute(_DEBRIS).fetchall()
    names = [str(r[0]) for r in rows]
    for name in names:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(STAGING, name)))
    if names:
        log.info(
            "dropped %d table(s) left by an interrupted sync: %s", len(names), ", ".join(names)
        )
    return names
