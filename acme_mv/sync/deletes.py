"""Rows deleted at the source, made visible until change capture exists.

An incremental sync reads rows by ``updated_at``: a deleted row leaves no
trace to read, so its last staged version stays in ``staging.orders`` /
``staging.order_items`` (and in every report) until ``sync --full`` re-copies
the table. The mirrors (customers, products) are compared whole by every sync
and need no such check.

The check compares key counts, which is cheap on both sides, over the keys
the last sync could have seen:

- ``M``: the highest staged key (one step down the staged key index);
- source keys: ``count(*) ... WHERE key <= M`` (an index-only scan of the
  source's primary key; rows inserted after the last sync get keys above
  ``M`` and are left out);
- staged keys: the distinct keys in staging (an index-only scan of the
  ``(key, _batch_id)`` index).

``staged - source`` is then "keys staged but gone from the source" minus
"source keys <= M that no sync has staged yet". The second set holds only
rows committed after the last sync's snapshot with a key below ``M`` (a
transaction that drew its key before a later one committed, or an explicit
key); the next sync stages them. So the difference never over-states the
deletes: it is exact after a sync with no writer in flight, and at worst a
recent late insert hides as many deletes until the next sync.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from psycopg import sql
from psycopg.rows import args_row

from acme_mv import revision
from acme_mv.config import Settings
from acme_mv.db import Conn, connection, one_value
from acme_mv.staging import tables
from acme_mv.staging.tables import SCHEMA, TABLES, TableSpec

__all__ = ["DeletedEstimate", "estimate", "missing_keys", "source_keys", "staged_keys"]

#: the tables whose deletes only ``sync --full`` removes
APPEND_ONLY = tuple(spec for spec in TABLES.values() if spec.kind == "append")


@dataclass(frozen=True, kw_only=True)
class DeletedEstimate:
    """One append-only table: staged keys against the source's, up to the highest staged key."""

    table: str
    key: str
    #: the highest staged key (None: nothing staged); higher source keys are not compared
    max_staged_key: int | None
    #: distinct keys in staging
    staged_keys: int
    #: source rows whose key is at most ``max_staged_key``
    source_keys: int

    @property
    def deleted(self) -> int:
        """At least this many staged keys are gone from the source (see the module doc)."""
        return max(self.staged_keys - self.source_keys, 0)

    @property
    def full_sync_due(self) -> bool:
        """Only ``sync --full`` removes deleted rows from staging and the reports."""
        return self.deleted > 0

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "deleted": self.deleted, "full_sync_due": self.full_sync_due}


def staged_keys(wh: Conn, spec: TableSpec) -> tuple[int | None, int]:
    """(highest live staged key, number of live staged keys): one pass over the latest-state table
    ``staging.<t>_state``, which holds each live key once (a tombstoned key is not there)."""
    row = (
        wh.cursor(row_factory=args_row(_top_and_count))
        .execute(
            sql.SQL("SELECT max({key}), count(*) FROM {table}").format(
                key=sql.Identifier(spec.key), table=sql.Identifier("staging", f"{spec.name}_state")
            )
        )
        .fetchone()
    )
    assert row is not None  # aggregates: one row
    return row


def _top_and_count(top: int | None, count: int) -> tuple[int | None, int]:
    return top, count


def source_keys(src: Conn, spec: TableSpec, *, up_to: int | None) -> int:
    """Source rows whose key is at most ``up_to`` (0
    when None): a range count on the primary key."""
    if up_to is None:
        return 0
    return one_value(
        src,
        sql.SQL("SELECT count(*) FROM {table} WHERE {key} <= %s").format(
            table=sql.Identifier(SCHEMA, spec.name), key=sql.Identifier(spec.key)
        ),
        (up_to,),
        kind=int,
    )


def estimate(
    src: Conn, wh: Conn, specs: Iterable[TableSpec] = APPEND_ONLY
) -> list[DeletedEstimate]:
    """Compare staged and source keys of each append-only spec (mirrors are skipped)."""
    out = []
    for spec in specs:
        if spec.kind != "append":
            continue
        top, staged = staged_keys(wh, spec)
        out.append(
            DeletedEstimate(
                table=spec.name,
                key=spec.key,
                max_staged_key=top,
                staged_keys=staged,
                source_keys=source_keys(src, spec, up_to=top),
            )
        )
    return out


def missing_keys(settings: Settings) -> list[DeletedEstimate]:
    """Per append-only table, how many staged rows were deleted at the source.

    ``any(e.full_sync_due for e in missing_keys(settings))`` says when
    ``sync --full`` is due. Cost: one pass over each staged key index and
    over each source primary key index. Raises NotMigrated, ConnectionFailed,
    SchemaDrift.
    """
    with connection(settings.database_url, role="warehouse") as wh:
        revision.require_head(wh)
        with connection(settings.effective_source_url, role="source", autocommit=True) as src:
            tables.check_schema(src, list(APPEND_ONLY))
            return estimate(src, wh)
