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
