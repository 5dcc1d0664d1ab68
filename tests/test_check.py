from __future__ import annotations

import json
from collections.abc import Callable

import psycopg

from acme_mv.check import check
from acme_mv.config import Settings
from tests.cli_runner import run
from tests.staging_copy import copy_batch

GAPS = """
INSERT INTO operations.customers (customer_name) VALUES ('Ann');
INSERT INTO operations.products (product_name, barcode, unity_price) VALUES ('bolt', 'b', 1);
INSERT INTO operations.orders (order_id, delivery_date, customer_id, status) VALUES
    (1, '2026-12-11', 1, 'PENDING'), (2, NULL, 7, NULL), (3, '2026-12-11', NULL, 'PENDING');
INSERT INTO operations.order_items (order_item_id, order_id, product_id, quanity) VALUES
    (10, 1, 1, 1), (11, 8, 1, 1), (12, NULL, 5, 1), (13, 2, NULL, 1);
"""


def test_check_counts_gaps_with_samples(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(GAPS)
    copy_batch(db_url, db_url)
    gaps = {g.name: (g.count, g.samples) for g in check(Settings(database_url=db_url))}
    assert gaps == {
        "items_without_order": (2, [11, 12]),
        "orders_without_items": (1, [3]),
        "orders_of_unknown_customers": (2, [2, 3]),
        "items_of_unknown_products": (2, [12, 13]),
        "orders_with_null_status": (1, [2]),
        "orders_with_null_delivery_date": (1, [2]),
    }


def test_check_reads_the_latest_version(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO operations.orders (order_id, status) VALUES (1, NULL)")
        copy_batch(db_url, db_url)
        conn.execute("UPDATE operations.orders SET status = 'PENDING', updated_at = CURRENT_TIMESTAMP(3) WHERE order_id = 1")
    copy_batch(db_url, db_url)
    gaps = {g.name: g.count for g in check(Settings(database_url=db_url))}
    assert gaps["orders_with_null_status"] == 0


def test_tombstones_are_absent_keys_not_gaps(db_url: str) -> None:
    """Deleted at the source (a --full sync tombstones them): no NULL status, no orphan."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(GAPS)
        copy_batch(db_url, db_url)
        conn.execute("DELETE FROM operations.orders WHERE order_id IN (1, 2)")
        conn.execute("DELETE FROM operations.order_items WHERE order_item_id IN (10, 13)")
    copy_batch(db_url, db_url, full=True)
    gaps = {g.name: (g.count, g.samples) for g in check(Settings(database_url=db_url))}
    assert gaps == {
        "items_without_order": (2, [11, 12]),
        "orders_without_items": (1, [3]),
        "orders_of_unknown_customers": (1, [3]),
        "items_of_unknown_products": (1, [12]),
        "orders_with_null_status": (0, []),
        "orders_with_null_delivery_date": (0, []),
    }


def test_cli_fail_on_gaps_and_json(db_url: str, cli_env: Callable[..., None]) -> None:
    cli_env(database_url=db_url)
    res = run("check", "--fail-on-gaps")
    assert res.exit_code == 0, res.stderr  # nothing staged: no gaps
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(GAPS)
    copy_batch(db_url, db_url)
    res = run("check")
    assert res.exit_code == 0
    assert "items_without_order (e.g. order_item_id 11, 12)" in res.stdout
    res = run("check", "--fail-on-gaps", "--json")
    assert res.exit_code == 4
    data = json.loads(res.stdout)
    assert {d["name"]: d["count"] for d in data}["orders_without_items"] == 1
    assert "gap(s) found" in res.stderr


def test_check_needs_a_migrated_warehouse(empty_url: str, cli_env: Callable[..., None]) -> None:
    cli_env(database_url=empty_url)
    res = run("check")
    assert res.exit_code == 1
    assert "acme-mv migrate" in res.stderr
