"""Source data and staging comparisons shared by the sync tests; the ``no_safety_margin`` and
``small_partitions`` fixtures (for ``pytest.mark.usefixtures``) turn the sync's timing knobs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

import acme_mv.staging.partitions
import acme_mv.sync.source
from acme_mv.config import Settings
from acme_mv.staging.tables import TABLES

APPEND_TABLES = ("orders", "order_items")

#: server-side generated rows: a few NULLs in every nullable column, orphans included
_FILL = {
    "customers": """
        INSERT INTO operations.customers (customer_name, is_active, customer_address)
        SELECT 'customer ' || g, g %% 3 <> 0,
               CASE WHEN g %% 5 = 0 THEN NULL ELSE g || ' Main St' END
        FROM generate_series(1, %(n)s) g""",
    "products": """
        INSERT INTO operations.products (product_name, barcode, unity_price, is_active)
        SELECT 'product ' || g, lpad(g::text, 13, '0'), round((g * 1.37) %% 100, 2),
               CASE WHEN g %% 4 = 0 THEN NULL ELSE g %% 2 = 0 END
        FROM generate_series(1, %(n)s) g""",
    "orders": """
        INSERT INTO operations.orders (order_date, delivery_date, customer_id, status)
        SELECT d, CASE WHEN g %% 7 = 0 THEN NULL ELSE d + 10 END, NULLIF(g %% 50, 0),
               (ARRAY['PENDING', 'PROCESSING', 'REPROCESSING', 'COMPLETED', NULL])[1 + g %% 5]
        FROM generate_series(1, %(n)s) g, LATERAL (SELECT DATE '2026-01-01' + g %% 30 AS d) x""",
    "order_items": """
        INSERT INTO operations.order_items (order_id, product_id, quanity)
        SELECT NULLIF(g %% 60, 0), NULLIF(g %% 40, 0),
               CASE WHEN g %% 11 = 0 THEN NULL ELSE g %% 1000 END
        FROM generate_series(1, %(n)s) g""",
}


def fill(url: str, **counts: int) -> None:
    """Insert ``counts[table]`` generated rows into each named source table."""
    with psycopg.connect(url, autocommit=True) as conn:
        for table, n in counts.items():
            conn.execute(_FILL[table], {"n": n})


def execute(url: str, statement: str | sql.Composed, params: Any = None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


def _rows(
    url: str, schema: str, relation: str, table: str, *, live: bool = False
) -> list[tuple[Any, ...]]:
    spec = TABLES[table]
    query = sql.SQL("SELECT {} FROM {} {} ORDER BY {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names),
        sql.Identifier(schema, relation),
        sql.SQL("WHERE NOT _deleted" if live else ""),
        sql.Identifier(spec.key),
    )
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def source_rows(url: str, table: str) -> list[tuple[Any, ...]]:
    return _rows(url, "operations", table, table)


def staged_latest(url: str, table: str) -> list[tuple[Any, ...]]:
    """The latest staged version of every key that is not a tombstone (the mirror itself for
    customers/products)."""
    if table in APPEND_TABLES:
        return _rows(url, "staging", f"{table}_latest", table, live=True)
    return _rows(url, "staging", table, table)


def assert_converged(
    source_url: str, warehouse_url: str, tables: tuple[str, ...] = tuple(TABLES)
) -> None:
    for table in tables:
        src = source_rows(source_url, table)
        staged = staged_latest(warehouse_url, table)
        assert staged == src, f"staging.{table} latest differs from operations.{table}"


def assert_no_orphans_or_duplicates(url: str) -> None:
    """Every staged version belongs to a committed batch and no (key, batch) appears twice: what
    a killed writer of batches (sync or change capture) must leave behind."""
    for table in APPEND_TABLES:
        key = TABLES[table].key
        orphans = sql.SQL(
            "SELECT count(*) FROM {} AS t WHERE NOT EXISTS "
            "(SELECT 1 FROM staging.sync_batches AS s WHERE s.batch_id = t._batch_id)"
        ).format(sql.Identifier("staging", table))
        assert scalar(url, orphans) == 0, f"staging.{table}: rows of no committed batch"
        doubled = sql.SQL(
            "SELECT count(*) FROM (SELECT 1 FROM {} GROUP BY {}, _batch_id "
            "HAVING count(*) > 1) AS d"
        ).format(sql.Identifier("staging", table), sql.Identifier(key))
        assert scalar(url, doubled) == 0, f"staging.{table}: a key twice in one batch"


def versions(url: str, table: str) -> dict[int, int]:
    """Number of staged versions per key."""
    key = TABLES[table].key
    query = sql.SQL("SELECT {k}, count(*) FROM {t} GROUP BY {k}").format(
        k=sql.Identifier(key), t=sql.Identifier("staging", table)
    )
    with psycopg.connect(url) as conn:
        return {int(k): int(n) for k, n in conn.execute(query).fetchall()}


def scalar(url: str, query: str | sql.Composed, params: Any = None) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def compared_tables(url: str, batch_id: int) -> list[str]:
    """The tables a batch compared whole with the source (``sync --full``: it tombstoned their
    missing keys)."""
    return list(
        scalar(
            url, "SELECT compared_tables FROM staging.sync_batches WHERE batch_id = %s", (batch_id,)
        )
    )


def settings(source_url: str, warehouse_url: str) -> Settings:
    return Settings(
        database_url=warehouse_url, source_url=None if source_url == warehouse_url else source_url
    )


@pytest.fixture
def no_safety_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the sync's 1 s safety margin, only the open-transaction watermark keeps a late
    writer's rows: the tests then prove that mechanism, not the margin, within their fast steps."""
    monkeypatch.setattr(acme_mv.sync.source, "SAFETY_MARGIN", timedelta(0))


@pytest.fixture
def small_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A partition of the version tables every 2 batches, so that compaction has some to drop."""
    monkeypatch.setattr(acme_mv.staging.partitions, "MIN_BATCHES", 2)
    monkeypatch.setattr(acme_mv.staging.partitions, "SPAN", timedelta(0))
