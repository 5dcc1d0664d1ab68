"""(6) Refresh: ``--historic`` vs ``--current`` with 1% changed since the snapshot.

Reference: a plain, from-scratch ``CREATE MATERIALIZED VIEW`` of the same
aggregates over the latest staged versions (what a non-incremental design
would pay on every refresh).
"""

from __future__ import annotations

from acme_mv import sync as sync_api
from acme_mv.reports import refresh as refresh_api
from benchmarks import pg, source
from benchmarks.acme_sync import migrated
from benchmarks.core import Bench, Result, guarded, rounds

NAME = "refresh"
SCRATCH = "bench_ref"

#: the three aggregates the reports read, from scratch, as the contract defines them
REFERENCE = (
    """
    CREATE MATERIALIZED VIEW bench_ref.open_orders AS
    SELECT delivery_date, status, count(*) AS open_orders
      FROM staging.orders_latest
     WHERE status IS NOT NULL AND status <> 'COMPLETED'
     GROUP BY delivery_date, status
    """,
    """
    CREATE MATERIALIZED VIEW bench_ref.pending_items AS
    SELECT i.product_id, sum(coalesce(i.quanity, 0)) AS pending_items
      FROM staging.order_items_latest i
      JOIN staging.orders_latest o ON o.order_id = i.order_id
     WHERE o.status IS NOT NULL AND o.status <> 'COMPLETED' AND i.product_id IS NOT NULL
     GROUP BY i.product_id
    """,
    """
    CREATE MATERIALIZED VIEW bench_ref.pending_orders_by_customer AS
    SELECT customer_id, count(*) AS pending_orders
      FROM staging.orders_latest
     WHERE status = 'PENDING' AND customer_id IS NOT NULL
     GROUP BY customer_id
    """,
)


def reference(bench: Bench) -> None:
    with bench.connect("warehouse", autocommit=False) as conn, conn.transaction():
        for statement in REFERENCE:
            conn.execute(statement)


def reset_reference(bench: Bench) -> None:
    with bench.connect("warehouse") as conn:
        pg.drop_schema(conn, SCRATCH)
        conn.execute(f"CREATE SCHEMA {SCRATCH}")


def measure(bench: Bench) -> list[Result]:
    with guarded(bench, "refresh", "acme-mv refresh") as found:
        migrated(bench)
        sync_api.sync(bench.settings)
        staged = bench.counts.get("orders", 0) + bench.counts.get("order_items", 0)

        historic = Result("refresh.historic", "acme-mv refresh --historic", rows=staged)
        rounds(bench, historic, lambda: refresh_api.refresh(bench.settings, mode="historic"))
        found.append(historic)

        changed: list[int] = []

        def snapshot_then_change() -> None:
            refresh_api.refresh(bench.settings, mode="historic")
            changed.append(source.change_orders(bench))
            sync_api.sync(bench.settings)

        current = Result(
            "refresh.current", "acme-mv refresh --current, 1% changed since the snapshot"
        )
        rounds(
            bench,
            current,
            lambda: refresh_api.refresh(bench.settings, mode="current"),
            before=snapshot_then_change,
        )
        current.rows = round(sum(changed) / len(changed))
        found.append(current)

        ref = Result(
            "refresh.reference", "plain CREATE MATERIALIZED VIEW (3 aggregates)", rows=staged
        )
        try:
            rounds(bench, ref, lambda: reference(bench), before=lambda: reset_reference(bench))
        finally:
            with bench.connect("warehouse") as conn:
                pg.drop_schema(conn, SCRATCH)
        found.append(ref)
    return found
