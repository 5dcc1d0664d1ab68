"""The sample source for the benchmarks, and the 1% changes between rounds.

:func:`build_source` fills ``operations`` with ``acme_mv.sample.load``, so the
benchmarks run on the same data as the demo and the tests.
"""

from __future__ import annotations

import logging
import time

from psycopg import sql

from acme_mv.sample import load, schema
from benchmarks.core import Bench, Conn

log = logging.getLogger("benchmarks.source")

TABLES = schema.TABLES
#: share of orders (and their items) one "1% change" touches
CHANGE_FRACTION = 0.01


def marker(orders: int) -> str:
    """What the source's schema comment says about how it was built."""
    return f"acme-mv benchmarks: {orders} orders by acme_mv.sample.load"


def build_source(conn: Conn, orders: int) -> None:
    """Create ``operations`` afresh and fill it with ``orders`` orders (~26 items each)."""
    schema.init(conn, replace=True)
    conn.commit()
    started = time.perf_counter()
    log.info("loading %d orders with acme_mv.sample.load", orders)
    load.load(conn, orders=orders)
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
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("operations", table))
        ).fetchone()
        out[table] = int(row[0]) if row else 0
    return out


def prepare(bench: Bench, *, fresh: bool) -> None:
    """Build the source unless the same builder already made it at ``bench.orders``; count rows."""
    with bench.connect("source", autocommit=False) as conn:
        row = conn.execute(
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace "
            "WHERE nspname = 'operations'"
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
