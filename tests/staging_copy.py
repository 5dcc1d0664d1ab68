"""A stand-in for one sync batch, exactly as docs/design states it (until acme_mv.sync lands).

``copy_batch`` reads every source table in ONE repeatable-read snapshot and, in ONE warehouse
transaction: draws a batch id from ``staging.sync_batch_id_seq``, ``SET LOCAL acme_mv.batch_id``,
appends to staging.orders / staging.order_items the source rows that differ from their latest
staged version (or are new), replaces staging.customers / staging.products with the source's
rows, and records the batch in staging.sync_batches. ``full=True`` truncates orders/order_items
first and records them in ``full_tables`` (what ``acme-mv sync --full`` does).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

COLUMNS = {
    "orders": ("order_id", "order_date", "delivery_date", "customer_id", "status"),
    "order_items": ("order_item_id", "order_id", "product_id", "quanity"),
    "customers": ("customer_id", "customer_name", "is_active", "customer_address"),
    "products": ("product_id", "product_name", "barcode", "unity_price", "is_active"),
}
AUDIT = ("updated_at", "updated_by", "created_at", "created_by")
VERSIONED = ("orders", "order_items")


def _row_of(alias: str, keys: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(alias, c) for c in (*keys, *AUDIT))


def copy_batch(source_url: str, warehouse_url: str, *, full: bool = False) -> int:
    """One sync batch from the source into staging; returns its batch id."""
    with psycopg.connect(source_url) as src, psycopg.connect(warehouse_url) as wh:
        src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with src.transaction(), wh.transaction():
            batch = wh.execute("SELECT nextval('staging.sync_batch_id_seq')").fetchone()[0]  # type: ignore[index]
            wh.execute(sql.SQL("SET LOCAL acme_mv.batch_id = {}").format(sql.Literal(str(batch))))
            if full:
                wh.execute("TRUNCATE staging.orders, staging.order_items")
            for table, keys in COLUMNS.items():
                cols = sql.SQL(", ").join(sql.Identifier(c) for c in (*keys, *AUDIT))
                tmp = sql.Identifier(f"new_{table}")
                target = sql.Identifier("staging", table)
                wh.execute(
                    sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                        tmp, cols, target
                    )
                )
                with src.cursor().copy(
                    sql.SQL("COPY {} ({}) TO STDOUT").format(sql.Identifier("operations", table), cols)
                ) as read, wh.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(tmp)) as write:
                    for block in read:
                        write.write(block)
                if table in VERSIONED:
                    key = sql.Identifier(keys[0])
                    wh.execute(
                        sql.SQL(
                            "INSERT INTO {target} ({cols}) SELECT {t_cols} FROM {tmp} AS t "
                            "WHERE NOT EXISTS (SELECT 1 FROM (SELECT * FROM {target} AS s WHERE s.{key} = t.{key} "
                            "ORDER BY s._batch_id DESC LIMIT 1) AS l WHERE ({l_cols}) IS NOT DISTINCT FROM ({t_cols}))"
                        ).format(target=target, cols=cols, tmp=tmp, key=key, t_cols=_row_of("t", keys), l_cols=_row_of("l", keys))
                    )
                else:
                    wh.execute(sql.SQL("DELETE FROM {}").format(target))
                    wh.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(target, cols, cols, tmp))
            wh.execute(
                "INSERT INTO staging.sync_batches (batch_id, tables, full_tables, finished_at) "
                "VALUES (%s, %s, %s, clock_timestamp())",
                (batch, list(COLUMNS), list(VERSIONED) if full else []),
            )
    return int(batch)
