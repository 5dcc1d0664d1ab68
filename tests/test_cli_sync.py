from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from acme_mv.errors import SchemaDrift
from acme_mv.staging.batch import SYNC_LOCK_KEY
from acme_mv.sync import status, sync
from tests.support.cli_runner import run
from tests.support.sync_helpers import execute, fill, scalar, settings

Point = Callable[..., None]


def _one_clean_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


def _nothing_staged(url: str) -> None:
    assert scalar(url, "SELECT count(*) FROM staging.sync_batches") == 0
    assert scalar(url, "SELECT count(*) FROM staging.sync_state") == 0
    for table in ("orders", "order_items", "customers", "products"):
        assert scalar(url, f"SELECT count(*) FROM staging.{table}") == 0


def test_sync_logs_one_line_per_table(db_url: str, cli_env: Point) -> None:
    fill(db_url, customers=3, products=4, orders=5, order_items=6)
    cli_env(database_url=db_url)
    res = run("sync")
    assert res.exit_code == 0, res.stderr
    assert "orders: initial, 5 rows read, 5 new" in res.stderr
    assert "order_items: initial, 6 rows read, 6 new" in res.stderr
    assert "customers: reload, 3 rows read, 3 new" in res.stderr
    assert "batch 1 committed" in res.stderr
    res = run("sync", "--table", "orders")
    assert res.exit_code == 0, res.stderr
    assert "orders: incremental" in res.stderr
    assert "order_items" not in res.stderr


def test_source_unreachable(warehouse_url: str, cli_env: Point) -> None:
    cli_env(database_url=warehouse_url, source_url="postgresql://acme@127.0.0.1:1/operations")
    res = run("sync")
    assert res.exit_code == 1
    line = _one_clean_line(res.stderr)
    assert "Cannot connect to the source (operations on 127.0.0.1:1)" in line


def test_a_wrong_source_password_is_one_line_without_the_password(
    password_role_url: str, warehouse_url: str, cli_env: Point
) -> None:
    # the role really needs its password (conftest's password_role_url)
    bad = make_conninfo(password_role_url, password="Sekr1t-pw")
    cli_env(database_url=warehouse_url, source_url=bad)
    res = run("sync")
    assert res.exit_code == 1
    line = _one_clean_line(res.stderr)
    assert "Cannot connect to the source" in line
    assert "password authentication failed" in line
    assert "Sekr1t-pw" not in res.stderr + res.stdout


@pytest.mark.parametrize(
    ("change", "expected", "drift"),
    [
        (
            "ALTER TABLE operations.orders RENAME COLUMN status TO state",
            "operations.orders has no column status",
            ("operations.orders", "status", "character varying", None),
        ),
        (
            "DROP TABLE operations.products",
            "no table operations.products",
            ("operations.products", None, None, None),
        ),
        (
            "ALTER TABLE operations.order_items ALTER COLUMN quanity TYPE bigint",
            "operations.order_items.quanity is bigint, the contract states integer",
            ("operations.order_items", "quanity", "integer", "bigint"),
        ),
    ],
)
def test_schema_drift_stops_before_copying(
    db_url: str,
    cli_env: Point,
    change: str,
    expected: str,
    drift: tuple[str, str | None, str | None, str | None],
) -> None:
    fill(db_url, customers=3, products=3, orders=3, order_items=3)
    execute(db_url, change)
    cli_env(database_url=db_url)
    res = run("sync")
    assert res.exit_code == 1
    assert expected in _one_clean_line(res.stderr)
    _nothing_staged(db_url)
    with pytest.raises(SchemaDrift) as info:
        sync(settings(db_url, db_url))
    err = info.value
    assert (err.table, err.column, err.expected, err.actual) == drift


@pytest.mark.parametrize("command", ["sync", "status"])
def test_warehouse_not_migrated(
    empty_url: str, source_url: str, cli_env: Point, command: str
) -> None:
    cli_env(database_url=empty_url, source_url=source_url)
    res = run(command)
    assert res.exit_code == 1
    assert "not migrated. Run `acme-mv migrate` first" in _one_clean_line(res.stderr)


def test_no_wait_exits_3_while_another_sync_holds_the_lock(db_url: str, cli_env: Point) -> None:
    cli_env(database_url=db_url)
    with psycopg.connect(db_url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (SYNC_LOCK_KEY,))
        res = run("sync", "--no-wait")
    assert res.exit_code == 3
    assert f"Another acme-mv sync is running (advisory lock {SYNC_LOCK_KEY}" in _one_clean_line(
        res.stderr
    )
    _nothing_staged(db_url)


def test_a_second_sync_waits_for_the_lock(db_url: str, cli_env: Point) -> None:
    fill(db_url, orders=5)
    cli_env(database_url=db_url)
    holder = psycopg.connect(db_url)
    holder.execute("SELECT pg_advisory_xact_lock(%s)", (SYNC_LOCK_KEY,))

    def release() -> None:
        time.sleep(1.0)
        holder.commit()

    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        started = time.monotonic()
        res = run("sync", "--table", "orders")
        waited = time.monotonic() - started
    finally:
        releaser.join()
        holder.close()
    assert res.exit_code == 0, res.stderr
    assert "waiting for advisory lock" in res.stderr
    assert waited >= 0.9
    assert scalar(db_url, "SELECT count(*) FROM staging.orders") == 5


def test_status_after_syncs(urls_separate: tuple[str, str], cli_env: Point) -> None:
    src, wh = urls_separate
    fill(src, customers=4, products=5, orders=30, order_items=70)
    first = sync(settings(src, wh))
    execute(
        src,
        "UPDATE operations.orders SET status = 'Z', updated_at = "
        "CURRENT_TIMESTAMP(3) WHERE order_id <= 3",
    )
    second = sync(settings(src, wh))
    cli_env(database_url=wh, source_url=src)
    res = run("status", "--json", "--exact")
    assert res.exit_code == 0, res.stderr
    by_table = {row["table"]: row for row in json.loads(res.stdout)}
    assert set(by_table) == {"customers", "products", "orders", "order_items"}
    orders = by_table["orders"]
    assert orders["cursor"] == second.tables["orders"].cursor.isoformat()
    assert orders["last_batch_id"] == second.batch_id == first.batch_id + 1
    assert orders["last_mode"] == "incremental"
    assert orders["last_rows_read"] == second.tables["orders"].rows_read
    assert orders["last_rows_copied"] == 3
    assert (orders["staged_rows"], orders["distinct_keys"]) == (33, 30)
    assert by_table["order_items"]["staged_rows"] == 70
    assert by_table["customers"]["distinct_keys"] == 4
    source_max = scalar(src, "SELECT max(updated_at) FROM operations.orders")
    assert orders["source_max_updated_at"] == source_max.isoformat()
    assert orders["lag_s"] == max(
        (source_max - second.tables["orders"].cursor).total_seconds(), 0.0
    )
    # estimates (the initial load analyzed the tables), then the table view
    rows = {r.table: r for r in status(settings(src, wh))}
    assert rows["order_items"].staged_rows == 70 and not rows["order_items"].staged_rows_exact
    res = run("status")
    assert res.exit_code == 0, res.stderr
    assert "order_items" in res.stdout and "~70" in res.stdout
    assert second.tables["orders"].cursor.isoformat(sep=" ", timespec="milliseconds") in res.stdout


def test_status_lag_grows_with_unsynced_writes(db_url: str) -> None:
    fill(db_url, orders=3)
    result = sync(settings(db_url, db_url), tables=["orders"])
    later = result.tables["orders"].cursor + dt.timedelta(minutes=10)
    execute(db_url, "UPDATE operations.orders SET updated_at = %s WHERE order_id = 1", (later,))
    rows = {r.table: r for r in status(settings(db_url, db_url))}
    assert rows["orders"].lag_s == 600.0
    assert rows["customers"].cursor is None and rows["customers"].lag_s is None


@pytest.fixture
def urls_separate(source_url: str, warehouse_url: str) -> tuple[str, str]:
    return source_url, warehouse_url


def test_status_shows_infinity_timestamps(db_url: str, cli_env: Point) -> None:
    """A source updated_at of 'infinity' (and a cursor of 'infinity') is shown as such; the
    lag is unknown (None) against a finite cursor."""
    fill(db_url, customers=2, products=2, orders=5, order_items=5)
    sync(settings(db_url, db_url))
    execute(db_url, "UPDATE operations.orders SET updated_at = 'infinity' WHERE order_id = 1")
    execute(
        db_url,
        "UPDATE staging.sync_state SET cursor_value = '-infinity' WHERE table_name = 'products'",
    )
    cli_env(database_url=db_url)
    res = run("status", "--json")
    assert res.exit_code == 0, res.stderr
    by_table = {row["table"]: row for row in json.loads(res.stdout)}
    assert by_table["orders"]["source_max_updated_at"] == "infinity"
    assert by_table["orders"]["lag_s"] is None
    assert by_table["products"]["cursor"] == "-infinity"
    res = run("status")
    assert res.exit_code == 0, res.stderr
    # the table shows the cursors (the source's max only in --json, checked above)
    assert "-infinity" in res.stdout.split()
