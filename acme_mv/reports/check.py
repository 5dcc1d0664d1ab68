"""Data-quality gaps in the staged data (latest version of every key).

The source declares no foreign keys and every reference is nullable, so
orphans are expected; the reports handle them (see docs/reports.md).
``check`` counts them so that an operator sees how much of the data is
orphaned and can tell a source problem from a sync problem. It reads the
latest-state tables (``staging.orders_state``, ``staging.order_items_state``:
one row per live key): a full pass over them, a diagnostic, not a step of
every cycle.

Each check is ONE statement whose cost is linear in staging: the offending
keys are computed once in a ``MATERIALIZED`` CTE, then counted and sampled
from it. A materialized CTE is planned for all of its rows, so its anti join
is a hash (or merge) join. The earlier ``... ORDER BY k LIMIT 5`` over the
same ``NOT EXISTS`` let the planner hope to stop after five rows (it expects
half the rows to be orphans, having no statistics through the ``*_latest``
views it then read) and pick a nested-loop anti join comparing every item with every order
(docs/reports.md, "Data gaps").

Two more gaps need the source: rows deleted there since they were staged
(``orders_deleted_at_source``, ``order_items_deleted_at_source``), which only
``sync --full`` removes; see :mod:`acme_mv.sync.deletes` for how they are
counted. They have no sample keys (keys are compared by count).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql
from psycopg.rows import args_row

from acme_mv.config import Settings
from acme_mv.db import connection
from acme_mv.revision import require_head
from acme_mv.staging import tables
from acme_mv.sync import deletes

SAMPLE_SIZE = 5


@dataclass(frozen=True, kw_only=True)
class Gap:
    name: str
    description: str
    #: the key column the samples are values of
    key: str
    count: int
    samples: list[int]


#: name -> (description, key column, SELECT of the offending keys). They read the latest-state
#: tables, which hold every live key once: a key deleted at the source (a tombstone) is not there,
#: and compaction never removes a live key from them (it may from the version tables).
CHECKS: dict[str, tuple[str, str, str]] = {
    "items_without_order": (
        "order items whose order_id is NULL or names no staged order",
        "order_item_id",
        "SELECT i.order_item_id AS k FROM staging.order_items_state i "
        "WHERE NOT EXISTS (SELECT 1 FROM staging.orders_state o WHERE o.order_id = i.order_id)",
    ),
    "orders_without_items": (
        "orders no order item points to",
        "order_id",
        "SELECT o.order_id AS k FROM staging.orders_state o "
        "WHERE NOT EXISTS (SELECT 1 FROM staging.order_items_state i "
        "WHERE i.order_id = o.order_id)",
    ),
    "orders_of_unknown_customers": (
        "orders whose customer_id is NULL or names no customer",
        "order_id",
        "SELECT o.order_id AS k FROM staging.orders_state o "
        "WHERE NOT EXISTS (SELECT 1 FROM staging.customers c WHERE c.customer_id = o.customer_id)",
    ),
    "items_of_unknown_products": (
        "order items whose product_id is NULL or names no product",
        "order_item_id",
        "SELECT i.order_item_id AS k FROM staging.order_items_state i "
        "WHERE NOT EXISTS (SELECT 1 FROM staging.products p WHERE p.product_id = i.product_id)",
    ),
    "orders_with_null_status": (
        "orders whose status is NULL (never open, never pending)",
        "order_id",
        "SELECT o.order_id AS k FROM staging.orders_state o WHERE o.status IS NULL",
    ),
    "orders_with_null_delivery_date": (
        "orders whose delivery_date is NULL (their own group in open_orders)",
        "order_id",
        "SELECT o.order_id AS k FROM staging.orders_state o WHERE o.delivery_date IS NULL",
    ),
}


#: one pass: the keys once (materialized, so planned
#: for all rows), then their count and the lowest ones
_ONE_PASS = (
    "WITH g AS MATERIALIZED ({body}) SELECT (SELECT count(*) "
    "FROM g), ARRAY(SELECT k FROM g ORDER BY k LIMIT {n})"
)


def _counted(count: int, samples: list[int]) -> tuple[int, list[int]]:
    return count, samples


def check_query(name: str) -> sql.Composed:
    """The one statement of check ``name``: (count, array of up to SAMPLE_SIZE lowest keys)."""
    body = sql.SQL(CHECKS[name][2])  # a named constant above
    return sql.SQL(_ONE_PASS).format(body=body, n=sql.Literal(SAMPLE_SIZE))


def deleted_gap_name(table: str) -> str:
    return f"{table}_deleted_at_source"


def check(settings: Settings) -> list[Gap]:
    """Every check's count and up to :data:`SAMPLE_SIZE` sample keys (lowest first).

    Reads the warehouse, and the source for the deleted-rows gaps. Raises
    NotMigrated, ConnectionFailed, SchemaDrift.
    """
    gaps: list[Gap] = []
    with connection(settings.database_url, role="warehouse") as conn:
        require_head(conn)
        for name, (description, key, _) in CHECKS.items():
            with conn.cursor(row_factory=args_row(_counted)) as cur:
                row = cur.execute(check_query(name)).fetchone()
            assert row is not None  # an aggregate: one row
            count, samples = row
            gaps.append(
                Gap(name=name, description=description, key=key, count=count, samples=samples)
            )
        with connection(settings.effective_source_url, role="source", autocommit=True) as src:
            tables.check_schema(src, list(deletes.APPEND_ONLY))
            gaps.extend(
                Gap(
                    name=deleted_gap_name(e.table),
                    description=(
                        f"staged {e.table} rows deleted at the source "
                        "since (only sync --full removes them)"
                    ),
                    key=e.key,
                    count=e.deleted,
                    samples=[],
                )
                for e in deletes.estimate(src, conn)
            )
    return gaps
