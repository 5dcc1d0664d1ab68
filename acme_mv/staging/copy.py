"""COPY streaming from the source into staging, and the three ways of landing rows.

Rows never pass through Python objects: ``COPY (SELECT ...) TO STDOUT (FORMAT
BINARY)`` on the source is written block by block into ``COPY ... FROM STDIN
(FORMAT BINARY)`` on the warehouse. Binary is safe because
:func:`acme_mv.staging.tables.check_schema` proved the source types are the
contract's, which are staging's.

- :func:`load_fresh` (an empty version table): ``COPY ... FREEZE`` into a new
  index-free load table, the indexes built after, attached as the batch's partition.
- :func:`load_changes` (incremental, append-only tables): COPY into a temp
  table, then insert only the rows whose content differs from the latest
  staged version of their key (re-read rows leave no duplicate version).
- :func:`load_mirror` (customers, products): COPY into a temp table, then
  delete gone keys and upsert changed rows; readers see the old or the new set.
- :func:`load_full_diff` (``--full`` on a staged append-only table): like
  :func:`load_changes`, plus a tombstone for every staged key the source lost.

:func:`mode_of` picks one of them per table (the :data:`Mode`) and :func:`load` runs it;
the cursor sync and change capture's initial copy both go through them.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable, Iterator
from typing import Literal

import psycopg
from psycopg import pq, sql

from acme_mv.db import Conn, one_value, tag_error
from acme_mv.staging import partitions
from acme_mv.staging.tables import TableSpec

log = logging.getLogger(__name__)

#: called with the size in bytes of each chunk as it is written
OnBytes = Callable[[int], None]

STAGING = "staging"
TEMP_PREFIX = "_acme_sync_"

#: how a table lands in a batch. ``initial``: staging was empty, copied whole
#: (:func:`load_fresh`); ``full``: every source row compared with staging, changed
#: rows appended, tombstones for keys gone (:func:`load_full_diff`);
#: ``incremental``: the rows the query picks, appended when changed
#: (:func:`load_changes`); ``reload``: a mirror (customers, products) compared whole
#: (:func:`load_mirror`)
Mode = Literal["initial", "full", "incremental", "reload"]


#: bytes gathered from the source's COPY messages (one per row) before one
#: write to the warehouse: each write costs a Python call and a buffer copy;
#: 256 KiB makes that negligible while keeping memory flat
CHUNK_BYTES = 256 * 1024

#: sort memory (kB) for the index builds after a fresh load, set for the sync
#: transaction only and only when the server's maintenance_work_mem is lower: the
#: builds are faster with more sort memory (docs/benchmarks.md, "Initial sync")
#: (one build at a time, so this is the most a sync adds to the server's memory)
INDEX_BUILD_MEMORY_KB = 1024 * 1024


def stream(
    src: Conn,
    query: sql.Composable,
    dst: Conn,
    target: sql.Composable,
    on_bytes: OnBytes,
    *,
    freeze: bool = False,
) -> int:
    """Copy the rows of ``query`` into ``target`` (``table (cols)``); return the row count.

    The raw binary COPY data is passed through untouched, in
    :data:`CHUNK_BYTES` writes. ``freeze`` is only valid on a table created
    (or truncated) in the same transaction.
    """
    copy_out = sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(query)
    options = sql.SQL("FORMAT BINARY, FREEZE" if freeze else "FORMAT BINARY")
    copy_in = sql.SQL("COPY {} FROM STDIN ({})").format(target, options)
    with dst.cursor() as dcur:
        with dcur.copy(copy_in) as inp:
            for chunk in copy_out_chunks(src, copy_out):
                inp.write(chunk)
                on_bytes(len(chunk))
        return max(dcur.rowcount, 0)


def copy_out_chunks(conn: Conn, statement: sql.Composable) -> Iterator[bytearray]:
    """Run ``COPY ... TO STDOUT`` and yield its data in :data:`CHUNK_BYTES` chunks.

    The server sends COPY data one message per row and libpq hands it over
    one message per ``PQgetCopyData`` call (psycopg's ``Copy.read()`` too: a
    row per call), so some code runs once per row whatever the client; here
    it is the least Python can do: one non-blocking ``PQgetCopyData`` through
    psycopg's public ``pq`` layer and one append to the chunk (about 0.3 µs a
    row), not psycopg's
    wait machinery, which ``cursor.copy()`` iteration goes through once per
    row. When nothing is buffered it waits in :func:`_wait_for_input` (see
    :func:`_next_copy_data` for why it never blocks inside libpq). Errors
    become psycopg's own exception classes.
    """
    pgconn = conn.pgconn
    pgconn.send_query(statement.as_bytes(conn))
    first = _get_result(pgconn)
    if first is None or first.status != pq.ExecStatus.COPY_OUT:
        _drain(pgconn)
        raise _error(conn, first)
    done = False
    get_copy_data = pgconn.get_copy_data  # the per-row loop: no call or lookup it can spare
    try:
        chunk = bytearray()
        while True:
            nbytes, data = get_copy_data(1)
            if nbytes > 0:
                chunk += data
                if len(chunk) >= CHUNK_BYTES:
                    yield chunk
                    chunk = bytearray()
            elif nbytes == 0:
                _wait_for_input(pgconn)
            else:
                break
        done = True
    finally:
        if (
            not done
        ):  # the consumer failed or was interrupted: stop the COPY, keep the connection usable
            _abandon(conn)
    final = _get_result(pgconn)
    _drain(pgconn)
    if nbytes == -2 or final is None or final.status != pq.ExecStatus.COMMAND_OK:
        raise _error(conn, final)
    if chunk:
        yield chunk


def _next_copy_data(pgconn: pq.abc.PGconn) -> tuple[int, memoryview | bytes]:
    """The next COPY row, waiting for the socket in :func:`select.select` when none is buffered.

    A blocking ``PQgetCopyData`` waits inside libpq while holding Python's
    GIL (so does a blocking ``PQgetResult``): while the server had not sent
    a row yet (a table locked by another session, a long scan before the
    first matching row) every other thread of the process froze, and Ctrl-C
    did nothing. ``select`` releases the GIL and is interrupted by signals;
    per buffered row this costs nothing more.
    """
    while True:
        nbytes, data = pgconn.get_copy_data(1)
        if nbytes != 0:
            return nbytes, data
        _wait_for_input(pgconn)


def _get_result(pgconn: pq.abc.PGconn) -> pq.abc.PGresult | None:
    """``PQgetResult`` once it cannot block (same reason as :func:`_next_copy_data`)."""
    while pgconn.is_busy():
        _wait_for_input(pgconn)
    return pgconn.get_result()


def _wait_for_input(pgconn: pq.abc.PGconn) -> None:
    select.select([pgconn.socket], [], [])
    pgconn.consume_input()


def _abandon(conn: Conn) -> None:
    """Cancel a COPY TO nobody reads any more and swallow what is still in flight."""
    conn.cancel_safe()
    pgconn = conn.pgconn
    while _next_copy_data(pgconn)[0] >= 0:
        pass
    _drain(pgconn)


def _drain(pgconn: pq.abc.PGconn) -> None:
    while _get_result(pgconn) is not None:
        pass


def _error(conn: Conn, result: pq.abc.PGresult | None) -> psycopg.Error:
    """The error of the source COPY, tagged with its connection so that it names the source."""
    if result is not None and result.status == pq.ExecStatus.FATAL_ERROR:
        return tag_error(
            psycopg.errors.error_from_result(result, encoding=conn.info.encoding),
            conn,
            "COPY ... TO STDOUT",
        )
    message = conn.pgconn.error_message.decode(errors="replace").strip()
    return tag_error(
        psycopg.OperationalError(message or "the source COPY ended unexpectedly"), conn
    )


def _columns(spec: TableSpec) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names)


def _target(table: sql.Identifier, spec: TableSpec) -> sql.Composable:
    """``table (contract columns)``: the COPY target; staging's own columns take their defaults."""
    return sql.SQL("{} ({})").format(table, _columns(spec))


def load_fresh(
    src: Conn, query: sql.Composable, dst: Conn, spec: TableSpec, on_bytes: OnBytes
) -> int:
    """Load the rows of ``query`` as the batch's partition of the empty ``staging.<t>``; return
    rows copied.

    The rows go once, with ``COPY ... FREEZE``, into a load table this
    transaction creates (no index: :func:`acme_mv.staging.partitions.create_sql`), not
    through the partitioned parent (which refuses FREEZE and would route each row); the
    parent's indexes are then built on it (one sort each instead of a
    maintenance per row) and it is attached in place of the batch's empty
    partition (:func:`acme_mv.staging.partitions.attach`). Readers see nothing until the
    commit; a failure or a kill leaves nothing.
    """
    batch_id = one_value(dst, "SELECT current_setting('acme_mv.batch_id')::bigint", kind=int)
    target = partitions.target(dst, spec, batch_id)
    name = partitions.load_name(batch_id, spec.name)
    load_table = sql.Identifier(STAGING, name)
    started = time.monotonic()
    dst.execute(partitions.create_sql(name, spec.name, target.start, target.end))
    rows = stream(src, query, dst, _target(load_table, spec), on_bytes, freeze=True)
    copied = time.monotonic()
    _raise_index_memory(dst)
    for number, definition in enumerate(target.indexes):
        index = partitions.load_index_name(batch_id, spec.name, number)
        dst.execute(partitions.retarget_index(definition, index, load_table))
    indexed = time.monotonic()
    dst.execute(sql.SQL("ANALYZE {}").format(load_table))
    analyzed = time.monotonic()
    partitions.attach(dst, target, batch_id)
    log.debug(
        "staging.%s: COPY %.2f s, %d index builds %.2f s, ANALYZE %.2f s, attach %.2f s",
        spec.name,
        copied - started,
        len(target.indexes),
        indexed - copied,
        analyzed - indexed,
        time.monotonic() - analyzed,
    )
    return rows


def _raise_index_memory(conn: Conn) -> None:
    """``SET LOCAL maintenance_work_mem`` to :data:`INDEX_BUILD_MEMORY_KB` when it is lower."""
    conn.execute(
        "SELECT set_config('maintenance_work_mem', %(kb)s || 'kB', true) FROM pg_settings "
        "WHERE name = 'maintenance_work_mem' AND setting::bigint < %(kb)s",
        {"kb": INDEX_BUILD_MEMORY_KB},
    )


def _copy_to_temp(
    src: Conn, query: sql.Composable, dst: Conn, spec: TableSpec, on_bytes: OnBytes
) -> tuple[sql.Identifier, int]:
    temp = sql.Identifier(TEMP_PREFIX + spec.name)
    dst.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            temp, _columns(spec), sql.Identifier(STAGING, spec.name)
        )
    )
    rows = stream(src, query, dst, _target(temp, spec), on_bytes)
    # the row count and the key's statistics are all the joins on the key need; every column's
    # took 0.4 s per sync for the 50,000 customers of a 1M-order source (loaded box)
    dst.execute(sql.SQL("ANALYZE {} ({})").format(temp, sql.Identifier(spec.key)))
    return temp, rows


def _differs(left: str, right: str, spec: TableSpec) -> sql.Composable:
    """``(left.c1, ...) IS DISTINCT FROM (right.c1, ...)`` over the contract columns."""
    return sql.SQL("({}) IS DISTINCT FROM ({})").format(
        sql.SQL(", ").join(sql.Identifier(left, c) for c in spec.column_names),
        sql.SQL(", ").join(sql.Identifier(right, c) for c in spec.column_names),
    )


def load_changes(
    src: Conn, query: sql.Composable, dst: Conn, spec: TableSpec, on_bytes: OnBytes
) -> tuple[int, int]:
    """Append the rows of ``query`` that are new or changed; return (rows read, rows appended)."""
    temp, rows_read = _copy_to_temp(src, query, dst, spec, on_bytes)
    return rows_read, append_changed(dst, temp, spec)


def append_changed(
    dst: Conn, temp: sql.Identifier, spec: TableSpec, *, with_deleted: bool = False
) -> int:
    """Append the rows of ``temp`` (one per key) that differ from their key's latest version.

    A row equal to the latest version is skipped, so a re-read row leaves no
    duplicate. ``with_deleted``: ``temp`` has a ``_deleted`` column (change
    capture's tombstones); a tombstone for a key whose latest version is a
    tombstone, or that was never staged, is skipped too. Returns rows appended.
    """
    key = sql.Identifier(spec.key)
    t_deleted = sql.SQL("t._deleted") if with_deleted else sql.SQL("false")
    insert = sql.SQL(
        """
        INSERT INTO {table} ({cols}, _deleted)
        SELECT {t_cols}, {t_deleted} FROM {temp} AS t
        LEFT JOIN LATERAL (
            SELECT {s_cols}, s._deleted FROM {table} AS s
            WHERE s.{key} = t.{key}
            ORDER BY s._batch_id DESC
            LIMIT 1
        ) AS l ON true
        WHERE CASE WHEN l.{key} IS NULL THEN NOT {t_deleted}
                   ELSE {differs} OR l._deleted IS DISTINCT FROM {t_deleted} END
        """
    ).format(
        table=sql.Identifier(STAGING, spec.name),
        cols=_columns(spec),
        t_cols=sql.SQL(", ").join(sql.Identifier("t", c) for c in spec.column_names),
        s_cols=sql.SQL(", ").join(sql.Identifier("s", c) for c in spec.column_names),
        temp=temp,
        key=key,
        differs=_differs("l", "t", spec),
        t_deleted=t_deleted,
    )
    return max(dst.execute(insert).rowcount, 0)


def load_full_diff(
    src: Conn, query: sql.Composable, dst: Conn, spec: TableSpec, on_bytes: OnBytes
) -> tuple[int, int, int]:
    """``--full`` on a staged append-only table: make its latest versions equal ``query``.

    Nothing is truncated: changed or new rows become new versions and every key
    whose latest version is live but that ``query`` no longer returns gets a
    TOMBSTONE (the key, the other columns NULL, ``_deleted``), the same
    representation change capture gives a delete. The rows as of an earlier
    batch stay, so the current-day views' deltas stay exact. Returns
    (rows read, versions appended, tombstones appended).
    """
    temp, rows_read = _copy_to_temp(src, query, dst, spec, on_bytes)
    dst.execute(sql.SQL("CREATE INDEX ON {} ({})").format(temp, sql.Identifier(spec.key)))
    tombstones = append_tombstones(dst, spec, keep=temp)
    return rows_read, append_changed(dst, temp, spec), tombstones


def append_tombstones(dst: Conn, spec: TableSpec, *, keep: sql.Identifier) -> int:
    """A tombstone for every live key (in the latest-state table ``staging.<t>_state``) that
    ``keep`` lacks. The state table, not the versions: compaction may have dropped the only
    version of a key that is still live, and its delete must still reach the reports."""
    key = sql.Identifier(spec.key)
    statement = sql.SQL(
        """
        INSERT INTO {table} ({key}, _deleted)
        SELECT l.{key}, true FROM {state} AS l
        WHERE NOT EXISTS (SELECT 1 FROM {keep} AS k WHERE k.{key} = l.{key})
        """
    ).format(
        table=sql.Identifier(STAGING, spec.name),
        state=sql.Identifier(STAGING, f"{spec.name}_state"),
        key=key,
        keep=keep,
    )
    return max(dst.execute(statement).rowcount, 0)


def load_mirror(
    src: Conn, query: sql.Composable, dst: Conn, spec: TableSpec, on_bytes: OnBytes
) -> tuple[int, int, int]:
    """Make ``staging.<t>`` equal the rows of ``query``; return (read, inserted or updated,
    deleted)."""
    temp, rows_read = _copy_to_temp(src, query, dst, spec, on_bytes)
    table = sql.Identifier(STAGING, spec.name)
    key = sql.Identifier(spec.key)
    deleted = dst.execute(
        sql.SQL(
            "DELETE FROM {table} AS s"
            " WHERE NOT EXISTS (SELECT 1 FROM {temp} AS t WHERE t.{key} = s.{key})"
        ).format(table=table, temp=temp, key=key)
    ).rowcount
    return rows_read, upsert_mirror(dst, temp, spec), max(deleted, 0)


def upsert_mirror(dst: Conn, temp: sql.Composable, spec: TableSpec) -> int:
    """Insert the rows of ``temp`` (one per key) into the mirror, updating changed ones; return
    rows written."""
    table = sql.Identifier(STAGING, spec.name)
    key = sql.Identifier(spec.key)
    changed_cols = [*(c for c in spec.column_names if c != spec.key), "_batch_id", "_loaded_at"]
    # only the rows that are new or differ reach the upsert: ON CONFLICT locks every row it
    # meets (a write on each page) even when its WHERE then skips the update
    upsert = sql.SQL(
        """
        INSERT INTO {table} AS s ({cols}) SELECT {cols} FROM (SELECT {cols} FROM {temp}) AS t
        WHERE NOT EXISTS (SELECT 1 FROM {table} AS o WHERE o.{key} = t.{key} AND NOT {changed})
        ON CONFLICT ({key}) DO UPDATE SET {sets}
        WHERE {differs}
        """
    ).format(
        table=table,
        cols=_columns(spec),
        temp=temp,
        key=key,
        changed=_differs("o", "t", spec),
        sets=sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in changed_cols
        ),
        differs=_differs("s", "excluded", spec),
    )
    return max(dst.execute(upsert).rowcount, 0)


def mode_of(conn: Conn, spec: TableSpec, *, full: bool) -> Mode:
    """How ``spec``'s rows land now: a mirror is reloaded, an empty table copied whole, a
    staged one compared whole (``full``) or read incrementally."""
    if spec.kind == "mirror":
        return "reload"
    if partitions.is_empty(conn, spec.name):
        return "initial"
    return "full" if full else "incremental"


def load(
    src: Conn, query: sql.Composable, dst: Conn, spec: TableSpec, mode: Mode, on_bytes: OnBytes
) -> tuple[int, int, int]:
    """Land the rows of ``query`` in ``staging.<t>`` the way ``mode`` says; return (rows read,
    rows new or changed, rows deleted or tombstoned)."""
    if mode == "incremental":
        rows_read, rows_new = load_changes(src, query, dst, spec, on_bytes)
        return rows_read, rows_new, 0
    if mode == "full":
        return load_full_diff(src, query, dst, spec, on_bytes)
    if mode == "reload":
        return load_mirror(src, query, dst, spec, on_bytes)
    rows = load_fresh(src, query, dst, spec, on_bytes)
    return rows, rows, 0
