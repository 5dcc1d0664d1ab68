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

from collections.abc import Callable
from dataclasses import dataclass

from acme_mv.cdc import pgoutput
from acme_mv.cdc.write import Change, Row, Transaction, Unsendable
from acme_mv.errors import SchemaDrift
from acme_mv.staging.tables import SCHEMA, TABLES, TableSpec

#: (type oid, type modifier) -> what ``format_type`` prints (the contract's notation)
TypeName = Callable[[int, int], str]


@dataclass(frozen=True)
class _Layout:
    spec: TableSpec
    #: position in the source tuple of each contract column, in contract order
    positions: tuple[int, ...]
    key: int

    def row(self, values: tuple[pgoutput.Value, ...]) -> Row:
        return tuple(values[p] for p in self.positions)


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

    def feed(self, message: pgoutput.Message) -> Transaction | None:
        if isinstance(message, pgoutput.Begin):
            self._current = Transaction()
            self._skip = frozenset(t for t, lsn in self._resync.items() if message.final_lsn < lsn)
        elif isinstance(message, pgoutput.Commit):
            done = self._current or Transaction()
            done.commit_lsn = message.commit_lsn
            done.end_lsn = message.end_lsn
            done.commit_time = message.commit_time
            self._current = None
            return done
        elif isinstance(message, pgoutput.Relation):
            try:
                self._layouts[message.oid] = self._layout(message)
            except SchemaDrift as exc:
                spec = TABLES[message.name]
                self._layouts[message.oid] = _Drifted(spec=spec, error=exc)
        elif isinstance(message, pgoutput.Insert):
            layout = self._live(message.oid)
            if layout is not None:
                row = layout.row(message.new)
                self._add(Change(layout.spec.name, "upsert", _key(row, layout), row))
        elif isinstance(message, pgoutput.Update):
            layout = self._live(message.oid)
            if layout is not None:
                row = layout.row(message.new)
                if message.old is not None:
                    old = layout.row(message.old)
                    row = tuple(
                        o if n is pgoutput.UNCHANGED else n for n, o in zip(row, old, strict=True)
                    )
                    old_key = _key(old, layout)
                    if old_key != _key(row, layout):  # the key itself changed: the old key is gone
                        self._add(Change(layout.spec.name, "delete", old_key, None))
                self._add(Change(layout.spec.name, "upsert", _key(row, layout), row))
        elif isinstance(message, pgoutput.Delete):
            layout = self._live(message.oid)
            if layout is not None:
                self._add(
                    Change(layout.spec.name, "delete", _key(layout.row(message.old), layout), None)
                )
        elif isinstance(message, pgoutput.Truncate):
            for oid in message.oids:
                layout = self._live(oid)
                if layout is not None:
                    self._add(Change(layout.spec.name, "truncate", b"", None))
        return None

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
        if self._current is None:  # pgoutput always wraps changes in B ... C
            raise pgoutput.DecodeError("a change outside a transaction")
        self._current.changes.append(change)

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
        return _Layout(spec=spec, positions=tuple(positions), key=spec.column_names.index(spec.key))


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
