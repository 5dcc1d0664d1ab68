"""Make test writes look like the contract's writers.

The source's jobs set ``updated_at`` to their transaction's start on every
change; a test's plain ``UPDATE ... SET status = ...`` would not, and the
incremental sync (rightly) would not see it. This trigger stamps every UPDATE
the way the jobs do, so tests can write naturally.
"""

from __future__ import annotations

import psycopg

TOUCH_TRIGGER_SQL = """
CREATE OR REPLACE FUNCTION operations._test_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := CURRENT_TIMESTAMP(3);
    RETURN NEW;
END $$;
"""


def stamp_updates_like_the_jobs(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Install the ``updated_at`` trigger on every operations table."""
    conn.execute(TOUCH_TRIGGER_SQL)
    for table in ("customers", "products", "orders", "order_items"):
        conn.execute(
            f"CREATE OR REPLACE TRIGGER touch_updated_at BEFORE UPDATE ON operations.{table} "
            "FOR EACH ROW EXECUTE FUNCTION operations._test_touch_updated_at()"
        )


#: an empty source and warehouse (one database holding both), then customers 1..3 and
#: products 1..3 at the source: the start of the property tests' small worlds
RESET = """
TRUNCATE operations.orders, operations.order_items, operations.customers, operations.products
    RESTART IDENTITY;
TRUNCATE staging.orders, staging.order_items, staging.customers, staging.products,
    staging.sync_batches, staging.orders_state, staging.order_items_state,
    analytics.open_orders_delta, analytics.pending_items_delta, analytics.pending_orders_delta,
    analytics.open_orders_historic, analytics.pending_items_historic,
    analytics.pending_orders_historic, analytics.open_orders_current,
    analytics.pending_items_current, analytics.pending_orders_current;
UPDATE analytics.snapshot SET historic_batch_id = NULL, refreshed_batch_id = NULL, day = NULL,
    taken_at = NULL, refreshed_at = NULL, history_batch_id = 0;
INSERT INTO operations.customers (customer_name) VALUES ('Ann'), ('Bob'), ('Cy');
INSERT INTO operations.products (product_name, barcode, unity_price) VALUES
    ('bolt', 'b1', 1), ('nut', 'n1', 2), ('gear', 'g1', 3);
"""
