"""The sample source for the benchmarks, and the 1% changes between rounds.

:func:`build_source` is the one place that fills ``operations``: today a
server-side generator (``INSERT ... SELECT`` over ``generate_series``, about
26 items per order, the contract's shapes and NULL habits); once
``acme_mv.sample.load`` is merged it is used instead, so the benchmarks run
on the same data as the demo.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from psycopg import sql

from acme_mv.sample import schema
from benchmarks.core import Bench, Conn

log = logging.getLogger("benchmarks.source")

TABLES = schema.TABLES
ITEMS_PER_ORDER = 26
#: share of orders (and their items) one "1% change" touches
CHANGE_FRACTION = 0.01
#: days of history the generated orders spread over (as the sample loader's default)
DAYS = 120

# Deterministic (setseed + no parallel workers) so two runs at the same N
# measure the same data. Orphans and NULLs as the contract warns: ~1% of
# orders without a customer or delivery date, ~0.5% without a status, ~1% of
# items without a product, items of orders that do not exist.
_GENERATE = [
    "SET LOCAL max_parallel_workers_per_gather = 0",
    "SELECT setseed(0.5)",
    # volatile expressions in a subquery's select list: evaluated once per row
    """
    INSERT INTO operations.customers
        (customer_id, customer_name, is_active, customer_address, updated_at, updated_by, created_at, created_by)
    SELECT g, 'Customer ' || g, active, g || ' Sample Street', ts, 1, ts, 1
    FROM (SELECT g, random() < 0.9 AS active,
                 localtimestamp(3) - random() * %(days)s * interval '1 day' AS ts
          FROM generate_series(1, %(customers)s) g) s
    """,
    """
    INSERT INTO operations.products
        (product_id, product_name, barcode, unity_price, is_active, updated_at, updated_by, created_at, created_by)
    SELECT g, 'Product ' || g, lpad(g::text, 13, '0'), price, active, ts, 1, ts, 1
    FROM (SELECT g, round((random() * 500)::numeric, 2) AS price,
                 CASE WHEN random() < 0.05 THEN NULL ELSE random() < 0.9 END AS active,
                 localtimestamp(3) - random() * %(days)s * interval '1 day' AS ts
          FROM generate_series(1, %(products)s) g) s
    """,
    """
    INSERT INTO operations.orders
        (order_id, order_date, delivery_date, customer_id, status, updated_at, updated_by, created_at, created_by)
    SELECT g, d,
           CASE WHEN r1 < 0.01 THEN NULL ELSE d + 10 END,
           CASE WHEN r2 < 0.01 THEN NULL ELSE 1 + floor(r4 * %(customers)s)::bigint END,
           CASE WHEN r3 < 0.005 THEN NULL
                WHEN d < current_date - 10 AND r3 < 0.97 THEN 'COMPLETED'
                ELSE (ARRAY['PENDING','PROCESSING','REPROCESSING','COMPLETED'])[1 + floor(r5 * 4)::int]
           END,
           least(d + r6 * interval '1 day', localtimestamp(3)), 1, d::timestamp(3), 1
    FROM (SELECT g, current_date - floor(random() * %(days)s)::int AS d, random() AS r1, random() AS r2,
                 random() AS r3, random() AS r4, random() AS r5, random() AS r6
          FROM generate_series(1, %(orders)s) g) s
    """,
    """
    INSERT INTO operations.order_items
        (order_item_id, order_id, product_id, quanity, updated_at, updated_by, created_at, created_by)
    SELECT g,
           CASE WHEN r1 < 0.002 THEN %(orders)s + g ELSE (g - 1) / %(per_order)s + 1 END,
           CASE WHEN r2 < 0.01 THEN NULL ELSE 1 + floor(r3 * %(products)s)::bigint END,
           CASE WHEN r4 < 0.01 THEN NULL ELSE floor(r5 * 1000)::int END,
           ts, 1, ts, 1
    FROM (SELECT g, random() AS r1, random() AS r2, random() AS r3, random() AS r4, random() AS r5,
                 localtimestamp(3) - random() * %(days)s * interval '1 day' AS ts
          FROM generate_series(1, %(items)s) g) s
    """,
]


def generate(conn: Conn, orders: int) -> None:
    """The private generator: ``orders`` orders, ~26 items each, in one transaction."""
    params = {
        "orders": orders,
        "items": orders * ITEMS_PER_ORDER,
        "per_order": ITEMS_PER_ORDER,
        "customers": max(100, orders // 10),
        "products": max(100, min(50_000, orders // 20)),
        "days": DAYS,
    }
    with conn.transaction():
        for statement in _GENERATE:
            conn.execute(statement, params if "%(" in statement else None)
        for table in TABLES:
            key = "order_item_id" if table == "order_items" else f"{table[:-1]}_id"
            conn.execute(
                sql.SQL("SELECT setval(pg_get_serial_sequence({t}, {k}), max({kid})) FROM {tid}").format(
                    t=sql.Literal(f"operations.{table}"),
                    k=sql.Literal(key),
                    kid=sql.Identifier(key),
                    tid=sql.Identifier("operations", table),
                )
            )


def _sample_load() -> Any:
    """``acme_mv.sample.load.load`` once it is merged, else None."""
    try:
        from acme_mv.sample import load as sample_load
    except ImportError:
        return None
    return getattr(sample_load, "load", None)


def marker(orders: int) -> str:
    """What the source's schema comment says about how it was built."""
    how = "acme_mv.sample.load" if _sample_load() is not None else "benchmarks generator"
    return f"acme-mv benchmarks: {orders} orders by {how}"


def build_source(conn: Conn, orders: int) -> None:
    """Create ``operations`` afresh and fill it with ``orders`` orders (~26 items each).

    Uses ``acme_mv.sample.load`` when it is there, the private generator otherwise.
    """
    schema.init(conn, replace=True)
    conn.commit()
    load = _sample_load()
    started = time.perf_counter()
    if load is not None:
        log.info("loading %d orders with acme_mv.sample.load", orders)
        load(conn, orders=orders)
    else:
        log.info("generating %d orders (private generator)", orders)
        generate(conn, orders)
    conn.execute(sql.SQL("COMMENT ON SCHEMA operations IS {}").format(sql.Literal(marker(orders))))
    conn.commit()
    prev = conn.autocommit
    conn.autocommit = True
    for table in TABLES:
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier("operations", table)))
    conn.autocommit = prev
    log.info("source built in %.1f s", time.perf_counter() - started)


def counts(conn: Conn) -> dict[str, int]:
    out = {}
    for table in TABLES:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("operations", table))).fetchone()
        out[table] = int(row[0]) if row else 0
    return out


def prepare(bench: Bench, *, fresh: bool) -> None:
    """Build the source unless the same builder already made it at ``bench.orders``; count rows."""
    with bench.connect("source", autocommit=False) as conn:
        row = conn.execute(
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = 'operations'"
        ).fetchone()
        conn.rollback()
        if not fresh and row is not None and row[0] == marker(bench.orders):
            log.info("reusing the source with %d orders (--fresh to rebuild)", bench.orders)
        else:
            build_source(conn, bench.orders)
        bench.counts = counts(conn)
        conn.rollback()


def change_orders(bench: Bench, fraction: float = CHANGE_FRACTION) -> int:
    """Change ``fraction`` of the orders and all their items, each call other orders.

    Orders move on one status step (never out of COMPLETED, as the workload);
    their items get a new quantity. Returns the number of rows changed.
    """
    modulus = max(1, round(1 / fraction))
    slot = bench.changes % modulus
    bench.changes += 1
    with bench.connect("source", autocommit=False) as conn, conn.transaction():
        orders = conn.execute(
            """
            UPDATE operations.orders
               SET status = CASE status WHEN 'PENDING' THEN 'PROCESSING'
                                        WHEN 'PROCESSING' THEN 'REPROCESSING'
                                        WHEN 'REPROCESSING' THEN 'COMPLETED'
                                        ELSE status END,
                   updated_at = localtimestamp(3), updated_by = -1
             WHERE order_id %% %(m)s = %(slot)s
            """,
            {"m": modulus, "slot": slot},
        ).rowcount
        items = conn.execute(
            """
            UPDATE operations.order_items
               SET quanity = coalesce(quanity, 0) %% 999 + 1,
                   updated_at = localtimestamp(3), updated_by = -1
             WHERE order_id %% %(m)s = %(slot)s
            """,
            {"m": modulus, "slot": slot},
        ).rowcount
    return orders + items
