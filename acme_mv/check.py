"""Data-quality gaps in the staged data (latest version of every key).

The source declares no foreign keys and every reference is nullable, so
orphans are expected; the reports handle them (see README.md, "Reports").
``check`` counts them so that an operator sees how much of the data is
orphaned and can tell a source problem from a sync problem. It reads the
``staging.*_latest`` views: a full pass over staging, a diagnostic, not a
step of every cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from acme_mv.config import Settings
from acme_mv.db import connection
from acme_mv.migrate import require_head

SAMPLE_SIZE = 5


@dataclass(frozen=True, kw_only=True)
class Gap:
    name: str
    description: str
    #: the key column the samples are values of
    key: str
    count: int
    samples: list[int]


#: name -> (description, key column, SELECT of the offending keys); tombstones (``_deleted``,
#: deleted at the source) are absent keys
CHECKS: dict[str, tuple[str, str, str]] = {
    "items_without_order": (
        "order items whose order_id is NULL or names no staged order",
        "order_item_id",
        "SELECT i.order_item_id AS k FROM staging.order_items_latest i WHERE NOT i._deleted "
        "AND NOT EXISTS (SELECT 1 FROM staging.orders_latest o WHERE o.order_id = i.order_id AND NOT o._deleted)",
    ),
    "orders_without_items": (
        "orders no order item points to",
        "order_id",
        "SELECT o.order_id AS k FROM staging.orders_latest o WHERE NOT o._deleted "
        "AND NOT EXISTS (SELECT 1 FROM staging.order_items_latest i WHERE i.order_id = o.order_id AND NOT i._deleted)",
    ),
    "orders_of_unknown_customers": (
        "orders whose customer_id is NULL or names no customer",
        "order_id",
        "SELECT o.order_id AS k FROM staging.orders_latest o WHERE NOT o._deleted "
        "AND NOT EXISTS (SELECT 1 FROM staging.customers c WHERE c.customer_id = o.customer_id)",
    ),
    "items_of_unknown_products": (
        "order items whose product_id is NULL or names no product",
        "order_item_id",
        "SELECT i.order_item_id AS k FROM staging.order_items_latest i WHERE NOT i._deleted "
        "AND NOT EXISTS (SELECT 1 FROM staging.products p WHERE p.product_id = i.product_id)",
    ),
    "orders_with_null_status": (
        "orders whose status is NULL (never open, never pending)",
        "order_id",
        "SELECT o.order_id AS k FROM staging.orders_latest o WHERE NOT o._deleted AND o.status IS NULL",
    ),
    "orders_with_null_delivery_date": (
        "orders whose delivery_date is NULL (their own group in open_orders)",
        "order_id",
        "SELECT o.order_id AS k FROM staging.orders_latest o WHERE NOT o._deleted AND o.delivery_date IS NULL",
    ),
}


def check(settings: Settings) -> list[Gap]:
    """Every check's count and up to :data:`SAMPLE_SIZE` sample keys (lowest first)."""
    gaps: list[Gap] = []
    with connection(settings.database_url, role="warehouse") as conn:
        require_head(conn)
        for name, (description, key, query) in CHECKS.items():
            body = sql.SQL(query)  # a named constant above
            row = conn.execute(sql.SQL("SELECT count(*) FROM ({}) AS g").format(body)).fetchone()
            samples = conn.execute(
                sql.SQL("SELECT k FROM ({}) AS g ORDER BY k LIMIT {}").format(body, sql.Literal(SAMPLE_SIZE))
            ).fetchall()
            count = row[0] if row else 0
            gaps.append(
                Gap(
                    name=name,
                    description=description,
                    key=key,
                    count=int(count) if isinstance(count, int) else 0,
                    samples=[int(s[0]) for s in samples if isinstance(s[0], int)],
                )
            )
    return gaps
