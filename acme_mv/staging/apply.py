"""Apply one batch: its signed deltas per report group, then the latest-state tables.

Called by :func:`acme_mv.staging.batch.open_batch` as a batch closes, i.e. by every writer of
batches (the cursor sync, ``sync --full``, change capture), inside the
batch's own warehouse transaction and under the sync lock. Batches are
serialized, so ``staging.*_state`` holds exactly the state before this batch
while the deltas are computed: each delta is exact.

The algebra (docs/reports.md): a report is a sum over keys of each key's
contribution (an open order adds 1 to its (delivery_date, status) group, an
item of an open order adds its quanity to its product). For the keys a batch
touches, delta = contribution after the batch - contribution before it; no
other key's contribution changes. The keys touched are:

- the orders with a version in the batch (a tombstone, ``_deleted``, is an
  order that no longer exists: it contributes nothing after);
- the items with a version in the batch, and every item of an order whose
  "exists and is open" changed in the batch (found through
  ``order_items_state.order_id``): an item's contribution depends on its
  order's state.

A key gone from the source arrives as a tombstone version like any other
change (``sync --full`` and change capture write them), so no batch needs to
visit keys it did not bring. The cost is the batch's rows plus the items of
the orders that opened or closed (about 26 per order), read through indexes.
A batch into an empty state (the first sync) has nothing to subtract and
takes a set-based path: a bulk insert into the state, the state's indexes
built after it, then each summary's delta is the summary of that state
(``views/summaries/<name>.sql``, the one definition of a report's groups).
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass

from psycopg import sql

from acme_mv import sqlfiles
from acme_mv.db import Conn, one_value
from acme_mv.reports import registry
from acme_mv.staging import temp

log = logging.getLogger(__name__)

#: the temp tables of one batch (named literally in the statements of views/state/ and
#: views/deltas/)
ORDER_CHANGES = "_acme_order_changes"
ITEM_CHANGES = "_acme_item_changes"
#: a batch's changes are ANALYZEd from this many rows: a catch-up batch of millions gets the
#: plans its size calls for (ANALYZE also drops the plans cached for smaller batches), while
#: a small one, planned from the table's size without column statistics, saves the
#: statistics' catalog writes. The first small batch after a large one is ANALYZEd too: the
#: plans cached for the large one (say a hash join over a whole state table) must not serve
#: every small batch after it.
ANALYZE_MIN_ROWS = 1000

#: per session, the scratch tables last ANALYZEd with a large batch
_ANALYZED_LARGE: weakref.WeakKeyDictionary[Conn, set[str]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, kw_only=True)
class Applied:
    """What one batch changed."""

    batch_id: int
    orders: int
    items: int
    delta_rows: int


# The SQL of a batch, one statement per file of views/state/ (docs/extending.md); the deltas are
# every summary's of the registry (views/deltas/<summary>.sql; a first batch's, the summary itself)
_ORDER_CHANGES = sqlfiles.text("state/order_changes.sql")
_ITEM_CHANGES = sqlfiles.text("state/item_changes.sql")
_ORDERS_GONE = sqlfiles.text("state/orders_state.delete.sql")
_ORDERS_STATE_NEW = sqlfiles.text("state/orders_state.insert.sql")
_ORDERS_STATE = sqlfiles.text("state/orders_state.upsert.sql")
_ITEMS_GONE = sqlfiles.text("state/order_items_state.delete.sql")
_ITEMS_STATE_NEW = sqlfiles.text("state/order_items_state.insert.sql")
_ITEMS_STATE = sqlfiles.text("state/order_items_state.upsert.sql")


_JOIN_PROBE = sqlfiles.text("state/_join_probe.sql")


def _join(state: str, key: str) -> sql.Composable:
    """The batch's rows ``n`` joined to their state ``s`` before the batch."""
    return sql.SQL(_JOIN_PROBE).format(
        state=sql.Identifier("staging", state), key=sql.Identifier(key)
    )


def _run(conn: Conn, statement: str, batch_id: int) -> int:
    # the statements above are files of views/ (named constants of this module): no outside text
    cur = conn.execute(sql.SQL(statement), {"batch": batch_id})
    return max(cur.rowcount, 0)


# A batch into an empty state (the first sync): every row is new; plain inserts instead of
# per-row probes and upserts, and the deltas are the summaries of the state they made.
_FIRST_ORDERS_STATE = sqlfiles.text("state/orders_state.first.sql")
_FIRST_ITEMS_STATE = sqlfiles.text("state/order_items_state.first.sql")

#: a summary's delta for a batch into an empty state: its groups over the state after the
#: batch (before it, every group was 0), those of n <> 0 as a batch's delta holds them
_FIRST_DELTA = (
    "INSERT INTO {delta} (batch_id, {keys}, n)"
    " SELECT {batch}, {keys}, n FROM ({summary}) AS s WHERE n <> 0"
)


def _first_deltas(conn: Conn, batch_id: int) -> int:
    """Every summary over the state tables, now holding exactly the batch's live rows, as the
    batch's delta; returns the delta rows written."""
    rows = 0
    for s in registry.summaries():
        statement = sql.SQL(_FIRST_DELTA).format(
            delta=s.table("delta"),
            keys=s.columns,
            batch=sql.Literal(batch_id),
            summary=sql.SQL(s.from_state),  # a file of views/summaries/
        )
        rows += max(conn.execute(statement).rowcount, 0)
    return rows


def _analyze_due(conn: Conn, name: str, rows: int) -> bool:
    """Whether scratch table ``name``, now holding ``rows``, is to be ANALYZEd: a large batch,
    or the first small one after a large one (:data:`ANALYZE_MIN_ROWS`)."""
    large = _ANALYZED_LARGE.setdefault(conn, set())
    if rows >= ANALYZE_MIN_ROWS:
        large.add(name)
        return True
    if name in large:
        large.discard(name)
        return True
    return False


def _state_empty(conn: Conn) -> bool:
    return one_value(
        conn,
        "SELECT NOT EXISTS (SELECT 1 FROM staging.orders_state)"
        " AND NOT EXISTS (SELECT 1 FROM staging.order_items_state)",
        kind=bool,
    )


#: the state's indexes, dropped for the first batch's bulk insert and built after it (one sort
#: each instead of millions of insertions)
_STATE_INDEXES = (
    (
        "ALTER TABLE staging.orders_state DROP CONSTRAINT orders_state_pkey",
        "ALTER TABLE staging.orders_state ADD CONSTRAINT orders_state_pkey PRIMARY KEY (order_id)",
    ),
    (
        "ALTER TABLE staging.order_items_state DROP CONSTRAINT order_items_state_pkey",
        "ALTER TABLE staging.order_items_state"
        " ADD CONSTRAINT order_items_state_pkey PRIMARY KEY (order_item_id)",
    ),
    (
        "DROP INDEX staging.order_items_state_order_idx",
        "CREATE INDEX order_items_state_order_idx ON staging.order_items_state (order_id)",
    ),
)


def _apply_first(conn: Conn, batch_id: int) -> Applied:
    t0 = time.monotonic()
    for drop, _ in _STATE_INDEXES:
        conn.execute(drop)
    orders = _run(conn, _FIRST_ORDERS_STATE, batch_id)
    items = _run(conn, _FIRST_ITEMS_STATE, batch_id)
    t1 = time.monotonic()
    for _, build in _STATE_INDEXES:
        conn.execute(build)
    t2 = time.monotonic()
    conn.execute("ANALYZE staging.orders_state, staging.order_items_state")
    t3 = time.monotonic()
    delta_rows = _first_deltas(conn, batch_id)
    log.debug(
        "first batch %s: state inserts %.2f s, state indexes %.2f s, ANALYZE %.2f s, deltas %.2f s",
        batch_id,
        t1 - t0,
        t2 - t1,
        t3 - t2,
        time.monotonic() - t3,
    )
    return Applied(batch_id=batch_id, orders=orders, items=items, delta_rows=delta_rows)


def _apply_first_deltas(conn: Conn, batch_id: int, state_rows: tuple[int, int]) -> Applied:
    """A first batch whose state tables the parallel copy already loaded (indexed and
    ANALYZEd): only its deltas."""
    t0 = time.monotonic()
    delta_rows = _first_deltas(conn, batch_id)
    log.debug(
        "first batch %s: deltas %.2f s (state loaded in parallel)", batch_id, time.monotonic() - t0
    )
    return Applied(
        batch_id=batch_id,
        orders=state_rows[0],
        items=state_rows[1],
        delta_rows=delta_rows,
    )


def apply_batch(conn: Conn, batch_id: int, *, state_rows: tuple[int, int] | None = None) -> Applied:
    """Write the batch's deltas into ``analytics.*_delta`` and bring ``staging.*_state`` up to it.

    ``state_rows``: the batch is a first batch whose latest-state tables were
    loaded whole beside its versions (:mod:`acme_mv.staging.parallel`; these are
    their row counts): only the deltas are left to write.
    """
    if state_rows is not None:
        return _apply_first_deltas(conn, batch_id, state_rows)
    if _state_empty(conn):
        applied = _apply_first(conn, batch_id)
        log.debug("batch %s applied to an empty state: %s", batch_id, applied)
        return applied
    # the batch's changes, before and after: one temp table per version table (the session's,
    # emptied by the commit: acme_mv.staging.temp)
    counted = []
    for name, statement, state, key in (
        (ORDER_CHANGES, _ORDER_CHANGES, "orders_state", "order_id"),
        (ITEM_CHANGES, _ITEM_CHANGES, "order_items_state", "order_item_id"),
    ):
        select = sql.SQL(statement).format(join=_join(state, key))
        params = {"batch": batch_id}
        changes = temp.ensure(conn, name, select, params)
        rows = max(
            conn.execute(sql.SQL("INSERT INTO {} {}").format(changes, select), params).rowcount, 0
        )
        if _analyze_due(conn, name, rows):
            conn.execute(sql.SQL("ANALYZE {}").format(changes))
        counted.append(rows)
    orders, items = counted
    # every summary's delta, once both temp tables hold the batch's changes (a delta reads
    # either or both)
    delta_rows = sum(_run(conn, s.delta, batch_id) for s in registry.summaries())
    for statement in (
        _ORDERS_GONE,
        _ORDERS_STATE_NEW,
        _ORDERS_STATE,
        _ITEMS_GONE,
        _ITEMS_STATE_NEW,
        _ITEMS_STATE,
    ):
        _run(conn, statement, batch_id)
    applied = Applied(
        batch_id=batch_id,
        orders=orders,
        items=items,
        delta_rows=delta_rows,
    )
    log.debug("batch %s applied: %s", batch_id, applied)
    return applied
