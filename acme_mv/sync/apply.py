"""Apply one batch: its signed deltas per report group, then the latest-state tables.

Called by :func:`acme_mv.sync.state.finish_batch`, i.e. by every writer of
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
  order's state;
- in a batch that re-copied a table whole (``full_tables``), also every key
  of that table the batch did not bring: it is gone from the source.

The cost is the batch's rows plus the items of the orders that opened or
closed (about 26 per order), read through indexes; a full re-copy costs the
table, as it must. The first batch into an empty state (the first sync) has
nothing to subtract and takes a set-based path: aggregates and a bulk insert,
the state's indexes built after it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[Any, ...]]

#: the temp tables of one batch (named literally in the statements below)
ORDER_CHANGES = "_acme_order_changes"
ITEM_CHANGES = "_acme_item_changes"


@dataclass(frozen=True, kw_only=True)
class Applied:
    """What one batch changed."""

    batch_id: int
    orders: int
    items: int
    delta_rows: int


# The orders the batch touched, before (the state table) and after (the batch's version).
_ORDER_CHANGES = """
CREATE TEMP TABLE {temp} ON COMMIT DROP AS
SELECT coalesce(n.order_id, s.order_id) AS order_id,
       s.order_id IS NOT NULL AS b_exists,
       s.delivery_date AS b_delivery_date, s.customer_id AS b_customer_id, s.status AS b_status,
       n.order_id IS NOT NULL AND NOT n._deleted AS a_exists,
       n.delivery_date AS a_delivery_date, n.customer_id AS a_customer_id, n.status AS a_status
FROM (SELECT o.order_id, o.delivery_date, o.customer_id, o.status, o._deleted
      FROM staging.orders AS o WHERE o._batch_id = %(batch)s) AS n
{join}
"""

_OPEN_ORDERS_DELTA = """
INSERT INTO analytics.open_orders_delta (batch_id, delivery_date, status, n)
SELECT %(batch)s, d.delivery_date, d.status, sum(d.n)
FROM _acme_order_changes AS c
CROSS JOIN LATERAL (VALUES
    (c.a_delivery_date, c.a_status, CASE WHEN c.a_exists THEN 1 ELSE 0 END),
    (c.b_delivery_date, c.b_status, CASE WHEN c.b_exists THEN -1 ELSE 0 END)
) AS d (delivery_date, status, n)
WHERE (d.status IS NOT NULL AND d.status <> 'COMPLETED')
GROUP BY d.delivery_date, d.status
HAVING sum(d.n) <> 0
"""

_PENDING_ORDERS_DELTA = """
INSERT INTO analytics.pending_orders_delta (batch_id, customer_id, n)
SELECT %(batch)s, d.customer_id, sum(d.n)
FROM _acme_order_changes AS c
CROSS JOIN LATERAL (VALUES
    (c.a_customer_id, c.a_status, CASE WHEN c.a_exists THEN 1 ELSE 0 END),
    (c.b_customer_id, c.b_status, CASE WHEN c.b_exists THEN -1 ELSE 0 END)
) AS d (customer_id, status, n)
WHERE d.status = 'PENDING' AND d.customer_id IS NOT NULL
GROUP BY d.customer_id
HAVING sum(d.n) <> 0
"""

# The items the batch touched, before and after; in_batch: the batch has a version of it.
_ITEM_CHANGES = """
CREATE TEMP TABLE {temp} ON COMMIT DROP AS
SELECT coalesce(n.order_item_id, s.order_item_id) AS order_item_id,
       n.order_item_id IS NOT NULL AS in_batch,
       s.order_item_id IS NOT NULL AS b_exists,
       s.order_id AS b_order_id, s.product_id AS b_product_id, s.quanity AS b_quanity,
       n.order_item_id IS NOT NULL AND NOT n._deleted AS a_exists,
       n.order_id AS a_order_id, n.product_id AS a_product_id, n.quanity AS a_quanity
FROM (SELECT i.order_item_id, i.order_id, i.product_id, i.quanity, i._deleted
      FROM staging.order_items AS i WHERE i._batch_id = %(batch)s) AS n
{join}
"""

# An item counts when it exists, has a product and its order exists and is open. Its order's
# state before and after the batch: the batch's order changes when the batch has the order
# (a hash lookup), else orders_state (one probe; not yet updated, so it is both). Third part:
# the unchanged items (no version in the batch) of the orders whose "exists and is open"
# flipped, summed straight from order_items_state (+quanity when the order opened, -quanity
# when it closed) instead of being copied into the item changes and looked up twice each.
_PENDING_ITEMS_DELTA = """
INSERT INTO analytics.pending_items_delta (batch_id, product_id, n)
SELECT %(batch)s, d.product_id, sum(d.n)
FROM (
    SELECT c.a_product_id AS product_id, coalesce(c.a_quanity, 0)::bigint AS n
    FROM _acme_item_changes AS c
    LEFT JOIN _acme_order_changes AS oc ON oc.order_id = c.a_order_id
    LEFT JOIN LATERAL (
        SELECT os.status FROM staging.orders_state AS os
        WHERE os.order_id = c.a_order_id AND oc.order_id IS NULL OFFSET 0
    ) AS os ON true
    WHERE c.a_exists AND c.a_product_id IS NOT NULL
      AND CASE WHEN oc.order_id IS NOT NULL THEN oc.a_exists AND (oc.a_status IS NOT NULL AND oc.a_status <> 'COMPLETED')
               ELSE (os.status IS NOT NULL AND os.status <> 'COMPLETED') END
    UNION ALL
    SELECT c.b_product_id, -coalesce(c.b_quanity, 0)::bigint
    FROM _acme_item_changes AS c
    LEFT JOIN _acme_order_changes AS oc ON oc.order_id = c.b_order_id
    LEFT JOIN LATERAL (
        SELECT os.status FROM staging.orders_state AS os
        WHERE os.order_id = c.b_order_id AND oc.order_id IS NULL OFFSET 0
    ) AS os ON true
    WHERE c.b_exists AND c.b_product_id IS NOT NULL
      AND CASE WHEN oc.order_id IS NOT NULL THEN oc.b_exists AND (oc.b_status IS NOT NULL AND oc.b_status <> 'COMPLETED')
               ELSE (os.status IS NOT NULL AND os.status <> 'COMPLETED') END
    UNION ALL
    SELECT s.product_id, CASE WHEN f.a_open THEN 1 ELSE -1 END * coalesce(s.quanity, 0)::bigint
    FROM (SELECT c.order_id, c.a_exists AND (c.a_status IS NOT NULL AND c.a_status <> 'COMPLETED') AS a_open
          FROM _acme_order_changes AS c
          WHERE (c.b_exists AND (c.b_status IS NOT NULL AND c.b_status <> 'COMPLETED')) <> (c.a_exists AND (c.a_status IS NOT NULL AND c.a_status <> 'COMPLETED'))) AS f
    CROSS JOIN LATERAL (
        -- OFFSET 0: one probe of the order_id index per order, never a scan of every item
        SELECT s.* FROM staging.order_items_state AS s WHERE s.order_id = f.order_id OFFSET 0
    ) AS s
    WHERE s.product_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM _acme_item_changes AS c WHERE c.order_item_id = s.order_item_id)
) AS d
GROUP BY d.product_id
HAVING sum(d.n) <> 0
"""

_ORDERS_GONE = """
DELETE FROM staging.orders_state AS s USING _acme_order_changes AS c
WHERE s.order_id = c.order_id AND c.b_exists AND NOT c.a_exists
"""
# keys new to the state (b_exists false: batches are serialized, so no row can be there) take a
# plain INSERT, about 30% cheaper than ON CONFLICT's speculative insertion; known keys upsert
_ORDERS_STATE_NEW = """
INSERT INTO staging.orders_state (order_id, delivery_date, customer_id, status, _batch_id)
SELECT c.order_id, c.a_delivery_date, c.a_customer_id, c.a_status, %(batch)s
FROM _acme_order_changes AS c WHERE c.a_exists AND NOT c.b_exists
"""
_ORDERS_STATE = """
INSERT INTO staging.orders_state AS s (order_id, delivery_date, customer_id, status, _batch_id)
SELECT c.order_id, c.a_delivery_date, c.a_customer_id, c.a_status, %(batch)s
FROM _acme_order_changes AS c WHERE c.a_exists AND c.b_exists
ON CONFLICT (order_id) DO UPDATE SET
    delivery_date = EXCLUDED.delivery_date, customer_id = EXCLUDED.customer_id,
    status = EXCLUDED.status, _batch_id = EXCLUDED._batch_id
"""

_ITEMS_GONE = """
DELETE FROM staging.order_items_state AS s USING _acme_item_changes AS c
WHERE s.order_item_id = c.order_item_id AND c.b_exists AND NOT c.a_exists
"""
_ITEMS_STATE_NEW = """
INSERT INTO staging.order_items_state (order_item_id, order_id, product_id, quanity, _batch_id)
SELECT c.order_item_id, c.a_order_id, c.a_product_id, c.a_quanity, %(batch)s
FROM _acme_item_changes AS c WHERE c.a_exists AND c.in_batch AND NOT c.b_exists
"""
_ITEMS_STATE = """
INSERT INTO staging.order_items_state AS s (order_item_id, order_id, product_id, quanity, _batch_id)
SELECT c.order_item_id, c.a_order_id, c.a_product_id, c.a_quanity, %(batch)s
FROM _acme_item_changes AS c WHERE c.a_exists AND c.in_batch AND c.b_exists
ON CONFLICT (order_item_id) DO UPDATE SET
    order_id = EXCLUDED.order_id, product_id = EXCLUDED.product_id,
    quanity = EXCLUDED.quanity, _batch_id = EXCLUDED._batch_id
"""


def _join(state: str, key: str, *, full: bool) -> sql.Composable:
    """The batch's rows ``n`` joined to their state ``s`` before the batch."""
    if full:
        # a whole re-copy also visits the state's keys the batch did not bring (gone at the source)
        return sql.SQL("FULL JOIN {state} AS s ON s.{key} = n.{key}").format(
            state=sql.Identifier("staging", state), key=sql.Identifier(key)
        )
    # OFFSET 0: one primary-key probe per row of the batch, never a hash join over the whole state
    return sql.SQL(
        "LEFT JOIN LATERAL (SELECT * FROM {state} AS s WHERE s.{key} = n.{key} OFFSET 0) AS s ON true"
    ).format(state=sql.Identifier("staging", state), key=sql.Identifier(key))


def _run(conn: Conn, statement: str, batch_id: int) -> int:
    # the statements above are named constants of this module: no outside text reaches them
    cur = conn.execute(sql.SQL(statement), {"batch": batch_id})
    return max(cur.rowcount, 0)


# The first batch into an empty state (the first sync): nothing to subtract, every row is new;
# set-based aggregates and plain inserts instead of per-row probes and upserts.
_FIRST = (
    """
    INSERT INTO analytics.open_orders_delta (batch_id, delivery_date, status, n)
    SELECT %(batch)s, o.delivery_date, o.status, count(*) FROM staging.orders AS o
    WHERE o._batch_id = %(batch)s AND NOT o._deleted AND o.status IS NOT NULL AND o.status <> 'COMPLETED'
    GROUP BY o.delivery_date, o.status
    """,
    """
    INSERT INTO analytics.pending_orders_delta (batch_id, customer_id, n)
    SELECT %(batch)s, o.customer_id, count(*) FROM staging.orders AS o
    WHERE o._batch_id = %(batch)s AND NOT o._deleted AND o.status = 'PENDING' AND o.customer_id IS NOT NULL
    GROUP BY o.customer_id
    """,
    """
    INSERT INTO analytics.pending_items_delta (batch_id, product_id, n)
    SELECT %(batch)s, i.product_id, sum(coalesce(i.quanity, 0))
    FROM staging.order_items AS i
    JOIN staging.orders AS o ON o.order_id = i.order_id AND o._batch_id = %(batch)s
    WHERE i._batch_id = %(batch)s AND NOT i._deleted AND NOT o._deleted AND i.product_id IS NOT NULL
      AND o.status IS NOT NULL AND o.status <> 'COMPLETED'
    GROUP BY i.product_id
    HAVING sum(coalesce(i.quanity, 0)) <> 0
    """,
    """
    INSERT INTO staging.orders_state (order_id, delivery_date, customer_id, status, _batch_id)
    SELECT o.order_id, o.delivery_date, o.customer_id, o.status, o._batch_id FROM staging.orders AS o
    WHERE o._batch_id = %(batch)s AND NOT o._deleted
    """,
    """
    INSERT INTO staging.order_items_state (order_item_id, order_id, product_id, quanity, _batch_id)
    SELECT i.order_item_id, i.order_id, i.product_id, i.quanity, i._batch_id FROM staging.order_items AS i
    WHERE i._batch_id = %(batch)s AND NOT i._deleted
    """,
)


def _state_empty(conn: Conn) -> bool:
    row = conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM staging.orders_state) AND NOT EXISTS (SELECT 1 FROM staging.order_items_state)"
    ).fetchone()
    return bool(row and row[0])


#: the state's indexes, dropped for the first batch's bulk insert and built after it (one sort
#: each instead of millions of insertions)
_STATE_INDEXES = (
    (
        "ALTER TABLE staging.orders_state DROP CONSTRAINT orders_state_pkey",
        "ALTER TABLE staging.orders_state ADD CONSTRAINT orders_state_pkey PRIMARY KEY (order_id)",
    ),
    (
        "ALTER TABLE staging.order_items_state DROP CONSTRAINT order_items_state_pkey",
        "ALTER TABLE staging.order_items_state ADD CONSTRAINT order_items_state_pkey PRIMARY KEY (order_item_id)",
    ),
    (
        "DROP INDEX staging.order_items_state_order_idx",
        "CREATE INDEX order_items_state_order_idx ON staging.order_items_state (order_id)",
    ),
)


def _apply_first(conn: Conn, batch_id: int) -> Applied:
    for drop, _ in _STATE_INDEXES:
        conn.execute(drop)
    counts = [_run(conn, statement, batch_id) for statement in _FIRST]
    for _, build in _STATE_INDEXES:
        conn.execute(build)
    conn.execute("ANALYZE staging.orders_state, staging.order_items_state")
    return Applied(
        batch_id=batch_id,
        orders=counts[3],
        items=counts[4],
        delta_rows=sum(counts[:3]),
    )


def apply_batch(conn: Conn, batch_id: int) -> Applied:
    """Write the batch's deltas into ``analytics.*_delta`` and bring ``staging.*_state`` up to it."""
    if _state_empty(conn):
        applied = _apply_first(conn, batch_id)
        log.debug("batch %s applied to an empty state: %s", batch_id, applied)
        return applied
    row = conn.execute(
        "SELECT full_tables FROM staging.sync_batches WHERE batch_id = %s", (batch_id,)
    ).fetchone()
    full_tables = set(row[0]) if row and row[0] else set()
    params = {"batch": batch_id}
    for temp in (ORDER_CHANGES, ITEM_CHANGES):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(temp)))
    conn.execute(
        sql.SQL(_ORDER_CHANGES).format(
            temp=sql.Identifier(ORDER_CHANGES),
            join=_join("orders_state", "order_id", full="orders" in full_tables),
        ),
        params,
    )
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(ORDER_CHANGES)))
    delta_rows = _run(conn, _OPEN_ORDERS_DELTA, batch_id) + _run(
        conn, _PENDING_ORDERS_DELTA, batch_id
    )
    conn.execute(
        sql.SQL(_ITEM_CHANGES).format(
            temp=sql.Identifier(ITEM_CHANGES),
            join=_join("order_items_state", "order_item_id", full="order_items" in full_tables),
        ),
        params,
    )
    items = _count(conn, ITEM_CHANGES)
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(ITEM_CHANGES)))
    delta_rows += _run(conn, _PENDING_ITEMS_DELTA, batch_id)
    orders = _count(conn, ORDER_CHANGES)
    for statement in (
        _ORDERS_GONE,
        _ORDERS_STATE_NEW,
        _ORDERS_STATE,
        _ITEMS_GONE,
        _ITEMS_STATE_NEW,
        _ITEMS_STATE,
    ):
        _run(conn, statement, batch_id)
    for temp in (ORDER_CHANGES, ITEM_CHANGES):
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(temp)))
    applied = Applied(
        batch_id=batch_id,
        orders=orders,
        items=items,
        delta_rows=delta_rows,
    )
    log.debug("batch %s applied: %s", batch_id, applied)
    return applied


def _count(conn: Conn, temp: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(temp))).fetchone()
    return int(row[0]) if row else 0
