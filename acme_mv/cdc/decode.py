"""pgoutput messages -> whole source transactions of contract rows.

The Relation message (sent before a table's first change in a session and
again after its definition changed) says which column is where: contract
columns are matched by NAME, other columns are ignored (an added column the
reports do not use changes nothing). A contract column that is missing or
whose type differs from the contract raises :class:`SchemaDrift` at the first
change of that table read under the new definition, before it is applied.

``resync`` (table name -> LSN of the snapshot ``acme-mv cdc resync`` re-copied it
in): a transaction whose commit record starts before that LSN is in the copy, so
its changes of that table are dropped, and a drifted definition they were sent
under does not stop the stream (the server's own rule for a slot's snapshot).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

from acme_mv.cdc import pgoutput
from acme_mv.cdc.write import Change, Row, Transaction, Unsendable, has_unchanged
from acme_mv.errors import SchemaDrift
from acme_mv.staging.tables import SCHEMA, TABLES, TableSpec

_BEGIN, _COMMIT = pgoutput.BEGIN, pgoutput.COMMIT
_ROW_CHANGES = frozenset((pgoutput.INSERT, pgoutput.UPDATE, pgoutput.DELETE))

#: (type oid, type modifier) -> what ``format_type`` prints (the contract's notation)
TypeName = Callable[[int, int], str]


@dataclass(frozen=True)
class _Layout:
    spec: TableSpec
    #: a source tuple's contract columns, in contract order (an ``itemgetter`` of their
    #: positions: one C call per row)
    row: Callable[[tuple[pgoutput.Value, ...]], Row]
    key: int


@dataclass(frozen=True)
class _Drifted:
    """A contract table whose Relation message does not match the contract: raised at its
    first change that is not skipped."""

    spec: TableSpec
    error: SchemaDrift


class Decoder:
    """Feed it every message; it returns each transaction when its commit arrives."""

    def __init__(self, type_name: TypeName, *, resync: dict[str, int] | None = None) -> None:
        self._type_name = type_name
        self._layouts: dict[int, _Layout | _Drifted | None] = {}
        self._current: Transaction | None = None
        self._resync = dict(resync or {})
        #: tables whose changes the current transaction drops (re-copied after it)
        self._skip: frozenset[str] = frozenset()
        #: changes dropped so (counted, for the stream's totals)
        self.skipped_changes = 0

    @property
    def in_transaction(self) -> bool:
        return self._current is not None

    @property
    def pending(self) -> int:
        """Changes of the open transaction held in memory."""
        return len(self._current.changes) if self._current is not None else 0

    def take(self) -> list[Change]:
        """The open transaction's changes so far, handed over to be spilled (counted in its
        ``spilled``); the transaction goes on with an empty list."""
        assert self._current is not None
        taken, self._current.changes = self._current.changes, []
        self._current.spilled += len(taken)
        return taken

    def reset(self) -> None:
        """Forget everything (a new replication session re-sends Relation messages)."""
        self._layouts.clear()
        self._current = None

    def feed(self, payload: bytes) -> Transaction | None:
        """Read one pgoutput payload; returns the transaction its commit ends.

        Begin, commit and row changes are read here without a message object each (the
        stream's per-message path); the rare others through :func:`pgoutput.decode`."""
        if not payload:
            raise pgoutput.DecodeError("empty message")
        kind = payload[0]
        if kind == _BEGIN:
            final_lsn = pgoutput.read_begin(payload)[0]
            self._current = Transaction()
            if self._resync:
                self._skip = frozenset(t for t, lsn in self._resync.items() if final_lsn < lsn)
        elif kind == _COMMIT:
            commit_lsn, end_lsn, micros = pgoutput.read_commit(payload)
            done = self._current or Transaction()
            done.commit_lsn = commit_lsn
            done.end_lsn = end_lsn
            done.commit_micros = micros
            self._current = None
            return done
        elif kind in _ROW_CHANGES:
            self._change(*pgoutput.read_change(payload))
        else:
            self._other(pgoutput.decode(payload))
        return None

    def _change(
        self,
        kind: int,
        oid: int,
        old_values: tuple[pgoutput.Value, ...] | None,
        new_values: tuple[pgoutput.Value, ...] | None,
    ) -> None:
        layout = self._live(oid)
        if layout is None:
            return
        table = layout.spec.name
        if new_values is None:  # a delete
            assert old_values is not None
            self._add(Change(table, "delete", _key(layout.row(old_values), layout), None))
            return
        row = layout.row(new_values)
        if old_values is not None:  # an update with the old row or key
            old = layout.row(old_values)
            if has_unchanged(row):
                row = tuple(
                    o if n is pgoutput.UNCHANGED else n for n, o in zip(row, old, strict=True)
                )
            old_key = _key(old, layout)
            if old_key != _key(row, layout):  # the key itself changed: the old key is gone
                self._add(Change(table, "delete", old_key, None))
        self._add(Change(table, "upsert", _key(row, layout), row))

    def _other(self, message: pgoutput.Message) -> None:
        if isinstance(message, pgoutput.Relation):
            try:
                self._layouts[message.oid] = self._layout(message)
            except SchemaDrift as exc:
                spec = TABLES[message.name]
                self._layouts[message.oid] = _Drifted(spec=spec, error=exc)
        elif isinstance(message, pgoutput.Truncate):
            for oid in message.oids:
                layout = self._live(oid)
                if layout is not None:
                    self._add(Change(layout.spec.name, "truncate", b"", None))

    def _live(self, oid: int) -> _Layout | None:
        """The layout to read a change of ``oid`` with; None: not a contract table, or a table
        the current transaction skips (counted); raises the drift of a drifted table."""
        layout = self._layouts.get(oid)
        if layout is None:
            return None
        if layout.spec.name in self._skip:
            self.skipped_changes += 1
            return None
        if isinstance(layout, _Drifted):
            raise layout.error
        return layout

    def _add(self, change: Change) -> None:
        current = self._current
        if current is None:  # pgoutput always wraps changes in B ... C
            raise pgoutput.DecodeError("a change outside a transaction")
        current.changes.append(change)

    def _layout(self, rel: pgoutput.Relation) -> _Layout | None:
        spec = TABLES.get(rel.name) if rel.namespace == SCHEMA else None
        if spec is None:
            return None
        by_name = {c.name: (i, c) for i, c in enumerate(rel.columns)}
        positions = []
        for column, expected in spec.columns:
            found = by_name.get(column)
            if found is None:
                raise SchemaDrift(
                    f"The source table {spec.qualified} no longer "
                    f"has column {column} ({expected}) that the "
                    "contract states: change capture stopped "
                    "before applying the transaction that shows it; restore the column, then "
                    f"acme-mv cdc resync --table {spec.name}",
                    table=spec.qualified,
                    column=column,
                    expected=expected,
                )
            index, col = found
            actual = self._type_name(col.type_oid, col.type_modifier)
            if actual != expected:
                raise SchemaDrift(
                    f"The source column {spec.qualified}.{column} "
                    f"is now {actual}, the contract states "
                    f"{expected}: change capture stopped before "
                    "applying the transaction that shows it; change the column back, then "
                    f"acme-mv cdc resync --table {spec.name}",
                    table=spec.qualified,
                    column=column,
                    expected=expected,
                    actual=actual,
                )
            positions.append(index)
        # every contract table has several columns: the itemgetter returns a tuple
        assert len(positions) > 1
        return _Layout(
            spec=spec,
            row=operator.itemgetter(*positions),
            key=spec.column_names.index(spec.key),
        )


def _key(row: Row, layout: _Layout) -> bytes:
    value = row[layout.key]
    if value is None or value is pgoutput.UNCHANGED:
        spec = layout.spec
        raise Unsendable(
            f"The source sent a change of {spec.qualified} without its key {spec.key} (its "
            f"replica identity does not hold it); run ALTER TABLE {spec.qualified} REPLICA "
            f"IDENTITY FULL on the source, then acme-mv cdc resync --table {spec.name}",
            table=spec.qualified,
            column=spec.key,
        )
    return value
