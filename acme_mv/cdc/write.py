"""Decoded changes -> one warehouse batch.

A :class:`Batch` gathers the changes of whole source transactions, in commit
order, keeping only the LAST state of each key (staging holds one version per
key and batch): an insert or update is the row's contract columns, a delete
is a tombstone (``None``), a TRUNCATE forgets the table's earlier changes and
marks it. :func:`write` lands a batch inside the caller's warehouse
transaction:

- orders, order_items (append-only versions): the rows go by ``COPY`` (text
  format, the values as the source's text output) into a temp table (the
  session's, emptied by the commit: :mod:`acme_mv.staging.temp`), then
  :func:`acme_mv.staging.copy.append_changed` appends those that differ from their
  key's latest version; a delete becomes a tombstone; a TRUNCATE tombstones
  every live key the batch does not write;
- customers, products (mirrors): deleted keys are deleted, the other rows
  upserted (:func:`acme_mv.staging.copy.upsert_mirror`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from psycopg import sql

from acme_mv.cdc.pgoutput import UNCHANGED, Value, timestamp
from acme_mv.db import Conn, one_value
from acme_mv.errors import SchemaDrift
from acme_mv.staging import copy
from acme_mv.staging import temp as session_temp
from acme_mv.staging.tables import TABLES, TableSpec

Row = tuple[Value, ...]

TEMP_PREFIX = "_acme_cdc_"


class Unsendable(SchemaDrift):
    """A change that cannot be applied as sent (an unchanged TOASTed value without the old row)."""


@dataclass
class TableChanges:
    """The last state of each changed key of one table: a row, or None for a delete."""

    rows: dict[bytes, Row | None] = field(default_factory=dict)
    truncated: bool = False


@dataclass
class Batch:
    """Whole source transactions gathered for one warehouse transaction."""

    tables: dict[str, TableChanges] = field(default_factory=dict)
    transactions: int = 0
    changes: int = 0
    #: end LSN of the newest transaction in the batch (what the slot may confirm after commit)
    end_lsn: int = 0
    commit_lsn: int = 0
    #: source commit time of the newest and the oldest transaction in the batch (pgoutput's
    #: microseconds: a datetime is made once a batch, in :attr:`commit_time`)
    commit_micros: int | None = None
    first_commit_micros: int | None = None
    #: the earlier changes of the batch's one transaction, spilled to the warehouse
    spill: Spill | None = None

    @property
    def commit_time(self) -> dt.datetime | None:
        return None if self.commit_micros is None else timestamp(self.commit_micros)

    @property
    def first_commit_time(self) -> dt.datetime | None:
        return None if self.first_commit_micros is None else timestamp(self.first_commit_micros)

    def add_changes(self, changes: Iterable[Change]) -> None:
        """Fold ``changes`` (in order) into the last state of each key."""
        tables = self.tables
        for name, kind, key, row in changes:
            table = tables.get(name)
            if table is None:
                table = tables[name] = TableChanges()
            if kind == "truncate":
                table.rows.clear()
                table.truncated = True
                continue
            if row is not None and has_unchanged(row):
                row = _fill_unchanged(row, table.rows.get(key))
            table.rows[key] = row

    def add(self, transaction: Transaction, *, spill: Spill | None = None) -> None:
        """Add a whole transaction; ``spill`` holds its earlier changes (the batch must be
        empty: a spilled transaction is a batch of its own)."""
        if spill is not None and spill.chunks:
            assert self.empty, "a spilled transaction is a batch of its own"
            self.spill = spill
        self.add_changes(transaction.changes)
        self.transactions += 1
        self.changes += len(transaction.changes) + transaction.spilled
        self.end_lsn = transaction.end_lsn
        self.commit_lsn = transaction.commit_lsn
        self.commit_micros = transaction.commit_micros
        if self.first_commit_micros is None:
            self.first_commit_micros = transaction.commit_micros

    @property
    def table_names(self) -> list[str]:
        """The tables the batch writes (its spill's too), sorted."""
        return sorted({*self.tables, *(self.spill.tables if self.spill else ())})

    @property
    def empty(self) -> bool:
        return self.transactions == 0


def has_unchanged(row: Row) -> bool:
    """Whether ``row`` holds an UNCHANGED marker (rare: ``in`` is one C scan, and an empty
    value equal to the marker is told apart by identity only then)."""
    return UNCHANGED in row and any(v is UNCHANGED for v in row)


def _fill_unchanged(row: Row, previous: Row | None) -> Row:
    """Replace UNCHANGED values by the same column of an
    earlier state in this batch, when there is one."""
    if previous is None:
        return row
    return tuple(p if v is UNCHANGED else v for v, p in zip(row, previous, strict=True))


class Change(NamedTuple):
    """One row change (a tuple: one per change of a stream, made and read fast)."""

    table: str
    #: ``upsert`` (row is the new state), ``delete`` (row is None), ``truncate``
    kind: str
    key: bytes
    row: Row | None


@dataclass(slots=True)
class Transaction:
    commit_lsn: int = 0
    end_lsn: int = 0
    #: commit time, pgoutput's microseconds since 2000-01-01 UTC (see :attr:`commit_time`)
    commit_micros: int | None = None
    #: its changes not spilled (all of them unless it outgrew the batch size)
    changes: list[Change] = field(default_factory=list)
    #: how many of its changes went to the spill before ``changes``
    spilled: int = 0

    @property
    def commit_time(self) -> dt.datetime | None:
        return None if self.commit_micros is None else timestamp(self.commit_micros)


SPILL_PREFIX = "_acme_cdc_spill_"


@dataclass
class Spill:
    """The changes of one source transaction larger than a batch, written to the warehouse in
    chunks of at most a batch's size as they arrive (TEMP tables of the stream's warehouse
    session, one per table: the contract columns, ``_deleted`` and ``_chunk``), so the
    stream's memory holds one chunk, not the transaction. At its commit :func:`write` takes
    each key's state from the newest chunk (the changes still in memory win), after the
    table's last TRUNCATE. The tables live as long as the session: a killed stream leaves
    nothing; :meth:`reset` empties them for the next transaction or a new replication
    session."""

    chunks: int = 0
    changes: int = 0
    #: table -> the first chunk that counts (the one of its last TRUNCATE, else 0)
    tables: dict[str, int] = field(default_factory=dict)
    truncated: set[str] = field(default_factory=set)

    def add(self, conn: Conn, changes: list[Change], *, encoding: str) -> None:
        """Write ``changes`` (the next ones of the transaction) as one chunk."""
        chunk = Batch()
        chunk.add_changes(changes)
        with conn.transaction():
            for name, table in chunk.tables.items():
                spec = TABLES[name]
                if table.truncated:
                    self.tables[name] = self.chunks
                    self.truncated.add(name)
                else:
                    self.tables.setdefault(name, 0)
                temp = sql.Identifier(SPILL_PREFIX + name)
                cols = sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names)
                conn.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE IF NOT EXISTS {temp} AS SELECT {cols}, "
                        "false AS _deleted, 0 AS _chunk FROM {table} WITH NO DATA"
                    ).format(temp=temp, cols=cols, table=sql.Identifier(copy.STAGING, name))
                )
                _copy_rows(
                    conn, spec, temp, table.rows.items(), encoding=encoding, chunk=self.chunks
                )
        self.chunks += 1
        self.changes += len(changes)

    def reset(self, conn: Conn) -> None:
        """Empty the spill tables (the transaction was applied or skipped, or is sent again)."""
        for name in TABLES:
            conn.execute(
                sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(
                    sql.Identifier(SPILL_PREFIX + name)
                )
            )
        self.chunks = self.changes = 0
        self.tables.clear()
        self.truncated.clear()


@dataclass(frozen=True, kw_only=True)
class Written:
    """What one batch did to staging."""

    versions: int
    tombstones: int
    mirror_rows: int
    mirror_deleted: int


def write(conn: Conn, batch: Batch, *, encoding: str) -> Written:
    """Land ``batch`` in staging, inside the caller's transaction (see the module doc)."""
    conn.execute("SET LOCAL DateStyle = 'ISO, YMD'")
    versions = tombstones = mirror_rows = mirror_deleted = 0
    spill = batch.spill
    for name in batch.table_names:
        spec = TABLES[name]
        changes = batch.tables.get(name) or TableChanges()
        temp = _load_temp(conn, spec, changes.rows.items(), encoding=encoding)
        truncated = changes.truncated
        rows = len(changes.rows)
        # whether the batch may append a tombstone (counted then)
        deletes = truncated or None in changes.rows.values()
        if spill is not None and name in spill.tables and not changes.truncated:
            rows += _merge_spill(conn, spec, temp, first_chunk=spill.tables[name])
            truncated = name in spill.truncated
            deletes = True
        if spec.kind == "append":
            appended = copy.append_tombstones(conn, spec, keep=temp) if truncated else 0
            if rows:
                appended += copy.append_changed(conn, temp, spec, with_deleted=True)
            dead = _count_appended_tombstones(conn, spec) if appended and deletes else 0
            versions += appended - dead
            tombstones += dead
        else:
            mirror_deleted += _delete_mirror_keys(conn, spec, temp, everything=truncated)
            mirror_rows += copy.upsert_mirror(conn, _live(temp), spec)
    return Written(
        versions=versions,
        tombstones=tombstones,
        mirror_rows=mirror_rows,
        mirror_deleted=mirror_deleted,
    )


def _load_temp(
    conn: Conn, spec: TableSpec, rows: Iterable[tuple[bytes, Row | None]], *, encoding: str
) -> sql.Identifier:
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names)
    columns = sql.SQL("SELECT {cols}, false AS _deleted FROM {table}").format(
        cols=cols, table=sql.Identifier(copy.STAGING, spec.name)
    )
    temp = session_temp.ensure(conn, TEMP_PREFIX + spec.name, columns)
    _copy_rows(conn, spec, temp, rows, encoding=encoding)
    return temp


def _merge_spill(conn: Conn, spec: TableSpec, temp: sql.Identifier, *, first_chunk: int) -> int:
    """Add to ``temp`` each spilled key's state from its newest chunk (from ``first_chunk``),
    for the keys ``temp`` (the changes after the spill) does not hold; returns how many."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names)
    key = sql.Identifier(spec.key)
    return conn.execute(
        sql.SQL(
            "INSERT INTO {temp} ({cols}, _deleted) SELECT {cols}, _deleted FROM ("
            "SELECT DISTINCT ON ({key}) * FROM pg_temp.{spill} AS s WHERE _chunk >= %s "
            "AND NOT EXISTS (SELECT 1 FROM {temp} AS t WHERE t.{key} = s.{key}) "
            "ORDER BY {key}, _chunk DESC) AS newest"
        ).format(temp=temp, cols=cols, key=key, spill=sql.Identifier(SPILL_PREFIX + spec.name)),
        (first_chunk,),
    ).rowcount


def _copy_rows(
    conn: Conn,
    spec: TableSpec,
    temp: sql.Identifier,
    rows: Iterable[tuple[bytes, Row | None]],
    *,
    encoding: str,
    chunk: int | None = None,
) -> None:
    """COPY ``rows`` (a key's state: a row, or None for a tombstone) into ``temp``, with
    ``_chunk`` when given."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names)
    key_index = spec.column_names.index(spec.key)
    width = len(spec.columns)
    extra = sql.SQL(", _chunk") if chunk is not None else sql.SQL("")
    suffix = b"" if chunk is None else b"\t" + str(chunk).encode()
    statement = sql.SQL("COPY {} ({}, _deleted{}) FROM STDIN (FORMAT text, ENCODING {})").format(
        temp, cols, extra, sql.Literal(encoding)
    )
    tails = (b"\tf" + suffix + b"\n", b"\tt" + suffix + b"\n")  # by ``deleted``
    before, after = (None,) * key_index, (None,) * (width - key_index - 1)
    with conn.cursor().copy(statement) as out:
        block: list[tuple[Row, bool]] = []
        for key, row in rows:
            if row is None:
                block.append((before + (key,) + after, True))
            else:
                if has_unchanged(row):
                    raise Unsendable(
                        f"The source sent an update of {spec.qualified} "
                        "without an unchanged TOASTed column; "
                        f"run ALTER TABLE {spec.qualified} REPLICA IDENTITY FULL on the source, "
                        f"then acme-mv cdc resync --table {spec.name}",
                        table=spec.qualified,
                        column=spec.column_names[[v is UNCHANGED for v in row].index(True)],
                    )
                block.append((row, False))
            if len(block) >= COPY_BLOCK_ROWS:
                out.write(copy_block(block, tails))
                block.clear()
        if block:
            out.write(copy_block(block, tails))


#: rows per write to the COPY (about :data:`acme_mv.staging.copy.CHUNK_BYTES` of the
#: contract's rows): each write costs a Python call and a buffer copy
COPY_BLOCK_ROWS = 2048

#: the bytes COPY's text format escapes in a value
_SPECIAL = re.compile(rb"[\\\t\n\r]")
_NULL_FIELD = b"\\N"


def copy_block(rows: Sequence[tuple[Row, bool]], tails: tuple[bytes, bytes]) -> bytes:
    """The COPY text lines of ``rows`` (values, deleted; all of one width), each ended by
    ``tails[deleted]`` (its last fields and the newline; both with as many tabs).

    Values almost never hold a byte COPY escapes, so they are joined as they are and the
    block is checked once, by counting in C: as many tabs, newlines and backslashes as the
    separators, the ends and the NULLs (``\\N``) put there, and no carriage return. Only a
    block that fails the check is made again value by value (:func:`_copy_line`).
    """
    parts: list[bytes] = []
    append = parts.append
    nulls = 0
    for row, deleted in rows:
        found = row.count(None)
        if found:
            nulls += found
            append(b"\t".join([_NULL_FIELD if v is None else v for v in row]))
        else:
            append(b"\t".join(row))  # type: ignore[arg-type]
        append(tails[deleted])
    out = b"".join(parts)
    lines = len(rows)
    tabs = lines * (len(rows[0][0]) - 1 + tails[0].count(b"\t")) if rows else 0
    if (
        out.count(b"\n") == lines
        and out.count(b"\\") == nulls
        and out.count(b"\t") == tabs
        and b"\r" not in out
    ):
        return out
    return b"".join(_copy_line(row, tails[deleted]) for row, deleted in rows)


def _escape(value: bytes) -> bytes:
    if _SPECIAL.search(value) is None:
        return value
    return (
        value.replace(b"\\", b"\\\\")  # first, so that the escapes below stay single
        .replace(b"\t", b"\\t")
        .replace(b"\n", b"\\n")
        .replace(b"\r", b"\\r")
    )


def _copy_line(row: Sequence[Value], tail: bytes) -> bytes:
    """One COPY text line, every value escaped, ended by ``tail``."""
    return b"\t".join([_NULL_FIELD if v is None else _escape(v) for v in row]) + tail


def _count_appended_tombstones(conn: Conn, spec: TableSpec) -> int:
    return one_value(
        conn,
        sql.SQL(
            "SELECT count(*) FROM {} WHERE _deleted AND _batch_id "
            "= current_setting('acme_mv.batch_id')::bigint"
        ).format(sql.Identifier(copy.STAGING, spec.name)),
        kind=int,
    )


def _live(temp: sql.Identifier) -> sql.Composable:
    return sql.SQL("(SELECT * FROM {} WHERE NOT _deleted) AS live").format(temp)


def _delete_mirror_keys(
    conn: Conn, spec: TableSpec, temp: sql.Identifier, *, everything: bool
) -> int:
    """Delete the mirror rows deleted in the batch (with
    ``everything``: all rows the batch does not write)."""
    key = sql.Identifier(spec.key)
    table = sql.Identifier(copy.STAGING, spec.name)
    if everything:
        statement = sql.SQL(
            "DELETE FROM {table} AS s WHERE NOT EXISTS (SELECT 1 FROM "
            "{temp} AS t WHERE t.{key} = s.{key} AND NOT t._deleted)"
        )
    else:
        statement = sql.SQL(
            "DELETE FROM {table} AS s USING {temp} AS t WHERE t.{key} = s.{key} AND t._deleted"
        )
    return max(conn.execute(statement.format(table=table, temp=temp, key=key)).rowcount, 0)
