"""Batches written the way change capture writes them: tombstones for rows deleted at the source.

A delete is a version with the key, every other contract column NULL and ``_deleted = true``,
in a batch opened and closed through ``acme_mv.staging.batch`` like every writer of batches.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from acme_mv.staging import batch as state


def tombstones(url: str, *, orders: Iterable[int] = (), items: Iterable[int] = ()) -> int:
    """One batch deleting ``orders`` and ``items``; returns its id."""
    orders, items = list(orders), list(items)
    with psycopg.connect(url) as wh:
        state.lock(wh, wait=True)
        tables = [t for t, keys in (("orders", orders), ("order_items", items)) if keys]
        batch = state.begin_batch(wh, tables=tables, full_tables=[])
        for order_id in orders:
            wh.execute(
                "INSERT INTO staging.orders (order_id, _deleted) VALUES (%s, true)", (order_id,)
            )
        for item_id in items:
            wh.execute(
                "INSERT INTO staging.order_items (order_item_id, _deleted) VALUES (%s, true)",
                (item_id,),
            )
        state.finish_batch(wh, batch)
    return batch
