"""Batches written the way change capture writes them: tombstones for rows deleted at the source.

A delete is a version with the key, every other contract column NULL and ``_deleted = true``,
in a batch opened and closed by ``acme_mv.staging.batch.open_batch`` like every writer of batches.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from acme_mv.staging.batch import open_batch


def tombstones(url: str, *, orders: Iterable[int] = (), items: Iterable[int] = ()) -> int:
    """One batch deleting ``orders`` and ``items``; returns its id."""
    orders, items = list(orders), list(items)
    tables = [t for t, keys in (("orders", orders), ("order_items", items)) if keys]
    with psycopg.connect(url) as wh, open_batch(wh, tables=tables) as batch:
        for order_id in orders:
            wh.execute(
                "INSERT INTO staging.orders (order_id, _deleted) VALUES (%s, true)", (order_id,)
            )
        for item_id in items:
            wh.execute(
                "INSERT INTO staging.order_items (order_item_id, _deleted) VALUES (%s, true)",
                (item_id,),
            )
    return batch.batch_id
