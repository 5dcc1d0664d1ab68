"""The four reports computed from scratch on the source, straight from the contract.

Independent of the analytics views on purpose: this is what the views must equal. So it
repeats, in its own words, what views/ defines once for the code (the open / PENDING
predicates, the top-N ranking and its default of 3, the export order): an oracle that read
views/ or acme_mv.reports.registry would agree with any mistake made there.
"""

from __future__ import annotations

import psycopg

#: an open order: status not NULL and not COMPLETED (open_orders, top_dates, pending_items)
OPEN = "o.status IS NOT NULL AND o.status <> 'COMPLETED'"
#: a pending order: status PENDING (top_customers only; pending_items counts OPEN orders' items)
PENDING = "o.status = 'PENDING'"
#: the contract's default n of the top reports
TOP_N = 3

#: report -> SQL on operations.*, ordered as the export orders it, without a limit
FROM_SCRATCH = {
    "open_orders": f"""
        SELECT o.delivery_date, o.status, count(*) AS open_orders
        FROM operations.orders o WHERE {OPEN}
        GROUP BY 1, 2 ORDER BY 1 NULLS LAST, 2""",
    "top_dates": f"""
        SELECT o.delivery_date, count(*) AS open_orders
        FROM operations.orders o WHERE {OPEN}
        GROUP BY 1 ORDER BY 2 DESC, 1 ASC NULLS LAST""",
    "pending_items": f"""
        SELECT i.product_id, p.product_name, sum(coalesce(i.quanity, 0)) AS pending_items
        FROM operations.order_items i
        JOIN operations.orders o ON o.order_id = i.order_id
        LEFT JOIN operations.products p ON p.product_id = i.product_id
        WHERE {OPEN} AND i.product_id IS NOT NULL
        GROUP BY 1, 2 HAVING sum(coalesce(i.quanity, 0)) > 0 ORDER BY 1""",
    "top_customers": f"""
        SELECT o.customer_id, c.customer_name, count(*) AS pending_orders
        FROM operations.orders o
        LEFT JOIN operations.customers c ON c.customer_id = o.customer_id
        WHERE {PENDING} AND o.customer_id IS NOT NULL
        GROUP BY 1, 2 ORDER BY 3 DESC, 1 ASC""",
}

#: the same reports read from the analytics views (full rankings for the top reports)
FROM_VIEWS = {
    "open_orders": "SELECT delivery_date, status, open_orders FROM analytics.open_orders "
    "ORDER BY delivery_date NULLS LAST, status",
    "top_dates": "SELECT delivery_date, open_orders FROM analytics.open_orders_by_date "
    "ORDER BY open_orders DESC, delivery_date ASC NULLS LAST",
    "pending_items": "SELECT product_id, product_name, pending_items FROM analytics.pending_items "
    "ORDER BY product_id",
    "top_customers": "SELECT customer_id, customer_name, pending_orders "
    "FROM analytics.pending_orders_by_customer ORDER BY pending_orders DESC, customer_id ASC",
}

TOP_VIEWS = {
    "top_dates": "SELECT * FROM analytics.top_dates",
    "top_customers": "SELECT * FROM analytics.top_customers",
}

Reports = dict[str, list[tuple[object, ...]]]


def expected(conn: psycopg.Connection[tuple[object, ...]]) -> Reports:
    return {
        name: [tuple(r) for r in conn.execute(q).fetchall()] for name, q in FROM_SCRATCH.items()
    }


def actual(conn: psycopg.Connection[tuple[object, ...]]) -> Reports:
    return {name: [tuple(r) for r in conn.execute(q).fetchall()] for name, q in FROM_VIEWS.items()}


def assert_views_match(conn: psycopg.Connection[tuple[object, ...]], want: Reports) -> None:
    got = actual(conn)
    for name in FROM_SCRATCH:
        assert got[name] == want[name], f"{name}: views {got[name]} != from scratch {want[name]}"
    for name, q in TOP_VIEWS.items():
        assert [tuple(r) for r in conn.execute(q).fetchall()] == want[name][:TOP_N], name


def _latest_as_of(table: str, key: str, versions: str) -> str:
    return (
        f"(SELECT * FROM (SELECT DISTINCT ON ({key}) * FROM {versions} AS s WHERE _batch_id <= "
        f"%(k)s ORDER BY {key}, _batch_id DESC) AS v WHERE NOT v._deleted)"
    )


def from_versions(versions: dict[str, str] | None = None) -> dict[str, str]:
    """The reports from scratch over the staged VERSIONS as of batch %(k)s (latest version per key
    with _batch_id <= k, tombstones removed; names from today's mirrors). ``versions`` may name,
    per table, another relation holding them (default ``staging.<table>``)."""
    rel = {"orders": "staging.orders", "order_items": "staging.order_items", **(versions or {})}
    return {
        name: q.replace(
            "operations.order_items",
            _latest_as_of("order_items", "order_item_id", rel["order_items"]),
        )
        .replace("operations.orders", _latest_as_of("orders", "order_id", rel["orders"]))
        .replace("operations.products", "staging.products")
        .replace("operations.customers", "staging.customers")
        for name, q in FROM_SCRATCH.items()
    }


FROM_VERSIONS = from_versions()


def expected_as_of(
    conn: psycopg.Connection[tuple[object, ...]],
    batch_id: int,
    queries: dict[str, str] = FROM_VERSIONS,
) -> Reports:
    return {
        name: [tuple(r) for r in conn.execute(q, {"k": batch_id}).fetchall()]
        for name, q in queries.items()
    }
