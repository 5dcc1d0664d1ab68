"""(3) The original solution's approach: pandas ``read_sql`` then ``DataFrame.to_sql``.

Through SQLAlchemy (psycopg 3 driver) into a scratch schema of the warehouse,
with pandas' defaults (``to_sql`` creates the table and inserts in batches).
It is slow, so it runs on a slice: the first ``SLICE_ORDERS`` orders and
their items. Reported as rows/s (and so comparable with the full sync).
"""

from __future__ import annotations

from benchmarks import pg
from benchmarks.core import Bench, Result, guarded, require, rounds

NAME = "pandas_baseline"
SCRATCH = "bench_pandas"
#: the slice of orders (with their ~26 items each) the baseline copies
SLICE_ORDERS = 50_000
#: rows per to_sql batch: pandas' default (None: everything at once) is
#: what the original did; SQLAlchemy still batches the INSERTs itself
CHUNKSIZE = None


def measure(bench: Bench) -> list[Result]:
    with guarded(bench, "pandas", "pandas read_sql + to_sql") as found:
        pd = require("pandas", "read_sql")
        from sqlalchemy import create_engine, text

        from benchmarks.sa import sqlalchemy_url

        slice_orders = min(bench.orders, SLICE_ORDERS)
        src = create_engine(sqlalchemy_url(bench.source_url))
        wh = create_engine(sqlalchemy_url(bench.warehouse_url))
        queries = {
            "orders": text("SELECT * FROM operations.orders WHERE order_id <= :n"),
            "order_items": text("SELECT * FROM operations.order_items WHERE order_id <= :n"),
        }
        copied: dict[str, int] = {}

        def reset() -> None:
            with bench.connect("warehouse") as conn:
                pg.drop_schema(conn, SCRATCH)
                conn.execute(f"CREATE SCHEMA {SCRATCH}")

        def copy() -> None:
            for table, query in queries.items():
                with src.connect() as conn:
                    frame = pd.read_sql(query, conn, params={"n": slice_orders})
                with wh.begin() as conn:
                    frame.to_sql(table, conn, schema=SCRATCH, index=False, chunksize=CHUNKSIZE)
                copied[table] = len(frame)

        result = Result("pandas", f"pandas read_sql + to_sql ({slice_orders:,} orders' slice)")
        try:
            rounds(bench, result, copy, before=reset)
        finally:
            src.dispose()
            wh.dispose()
            with bench.connect("warehouse") as conn:
                pg.drop_schema(conn, SCRATCH)
        result.rows = sum(copied.values())
        result.extra = {"slice_orders": slice_orders, "rows_by_table": copied}
        found.append(result)
    return found
