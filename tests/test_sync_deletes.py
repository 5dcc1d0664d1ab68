"""Rows deleted at the source are reported by ``status --exact`` and ``check`` until ``sync
--full``."""

from __future__ import annotations

import json
from collections.abc import Callable

from acme_mv.reports.check import check
from acme_mv.sync import missing_keys, status, sync
from tests.support.cli_runner import run
from tests.support.sync_helpers import execute, fill, settings

COUNTS = {"customers": 10, "products": 10, "orders": 200, "order_items": 600}


def _deleted(src: str, wh: str) -> dict[str, int]:
    return {e.table: e.deleted for e in missing_keys(settings(src, wh))}


def test_deletes_are_counted_until_a_full_sync(source_url: str, warehouse_url: str) -> None:
    src, wh = source_url, warehouse_url
    fill(src, **COUNTS)
    sync(settings(src, wh))
    assert _deleted(src, wh) == {"orders": 0, "order_items": 0}
    execute(src, "DELETE FROM operations.orders WHERE order_id BETWEEN 10 AND 14")
    execute(src, "DELETE FROM operations.order_items WHERE order_item_id IN (1, 50, 600)")
    # rows inserted since the last sync have higher keys: they are not compared
    fill(src, orders=30, order_items=40)
    found = {e.table: e for e in missing_keys(settings(src, wh))}
    assert (
        found["orders"].max_staged_key,
        found["orders"].staged_keys,
        found["orders"].source_keys,
    ) == (200, 200, 195)
    assert (found["order_items"].deleted, found["order_items"].full_sync_due) == (3, True)
    assert found["orders"].as_json()["deleted"] == 5
    # an incremental sync cannot see a delete: the count stays
    sync(settings(src, wh))
    assert _deleted(src, wh) == {"orders": 5, "order_items": 3}
    sync(settings(src, wh), full=True)
    assert _deleted(src, wh) == {"orders": 0, "order_items": 0}


def test_a_key_staged_late_hides_a_delete_until_the_next_sync(db_url: str) -> None:
    """The count never over-states: a source key below the highest staged one that no sync has
    staged yet (here an explicit key; in production a late commit) offsets one delete, until the
    next sync."""
    fill(db_url, orders=100)
    execute(db_url, "DELETE FROM operations.orders WHERE order_id = 20")
    sync(settings(db_url, db_url))
    execute(db_url, "INSERT INTO operations.orders (order_id, status) VALUES (20, 'PENDING')")
    execute(db_url, "DELETE FROM operations.orders WHERE order_id IN (30, 31)")
    assert _deleted(db_url, db_url)["orders"] == 1
    sync(settings(db_url, db_url))
    assert _deleted(db_url, db_url)["orders"] == 2


def test_status_exact_and_check_report_deletes(db_url: str, cli_env: Callable[..., None]) -> None:
    fill(db_url, **COUNTS)
    sync(settings(db_url, db_url))
    execute(db_url, "DELETE FROM operations.order_items WHERE order_item_id <= 4")
    cli_env(database_url=db_url)

    rows = {r.table: r.deleted_at_source for r in status(settings(db_url, db_url), exact=True)}
    assert rows == {"customers": None, "products": None, "orders": 0, "order_items": 4}
    # without --exact nothing is scanned, nothing is claimed
    assert {r.deleted_at_source for r in status(settings(db_url, db_url))} == {None}

    res = run("status", "--json", "--exact")
    assert res.exit_code == 0, res.stderr
    assert {d["table"]: d["deleted_at_source"] for d in json.loads(res.stdout)}["order_items"] == 4
    res = run("status", "--exact")
    assert res.exit_code == 0, res.stderr
    assert "deleted at source" in res.stdout
    assert (
        "order_items: 4 staged row(s) were deleted at the source; run `acme-mv sync --full`"
        in res.stderr
    )

    gaps = {g.name: (g.count, g.key) for g in check(settings(db_url, db_url))}
    assert gaps["order_items_deleted_at_source"] == (4, "order_item_id")
    assert gaps["orders_deleted_at_source"] == (0, "order_id")
    res = run("check", "--json", "--fail-on-gaps")
    assert res.exit_code == 4
    assert {d["name"]: d["count"] for d in json.loads(res.stdout)}[
        "order_items_deleted_at_source"
    ] == 4
    assert "4  order_items_deleted_at_source" in run("check").stdout
