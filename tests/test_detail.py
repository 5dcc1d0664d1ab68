"""The detail of a report row adds up to the row's number: for every report and every group,
after random workloads, both when the reports include the newest batch (the latest-state tables)
and when a batch was staged after the last refresh (the state as of the refreshed batch)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from acme_mv.config import Settings
from acme_mv.errors import BadArgument, UnknownReport
from acme_mv.reports import detail as detail_api
from acme_mv.reports.export import REPORTS, report_query
from acme_mv.reports.refresh import refresh
from tests.support.batch_writes import tombstones
from tests.support.cli_runner import run
from tests.support.source_writes import RESET, stamp_updates_like_the_jobs
from tests.support.staging_copy import copy_batch

pytestmark = pytest.mark.usefixtures("no_safety_margin", "small_partitions")

STATUSES = st.sampled_from(["PENDING", "PROCESSING", "COMPLETED", None])
KEYS = st.one_of(st.none(), st.integers(1, 4))
DELIVERY = st.one_of(st.none(), st.integers(0, 2))
QUANITY = st.one_of(st.none(), st.integers(0, 9))

WRITE = st.one_of(
    st.tuples(
        st.just("order"), DELIVERY, KEYS, STATUSES, st.lists(st.tuples(KEYS, QUANITY), max_size=2)
    ),
    st.tuples(st.just("status"), st.integers(0, 50), STATUSES),
    st.tuples(st.just("item"), st.integers(0, 50), st.integers(1, 8), KEYS, QUANITY),
    st.tuples(st.just("delete"), st.integers(0, 50), st.booleans()),
)


def _date(offset: int | None) -> str | None:
    return (
        None
        if offset is None
        else (datetime(2026, 12, 1) + timedelta(days=offset)).date().isoformat()
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def assert_details_add_up(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """Every group of every report: its detail's total is its number; returns the groups seen."""
    groups = 0
    for name in REPORTS:
        shape = detail_api.shape(name)
        query = report_query(name, limit=10_000 if REPORTS[name].ranked else None)
        cur = conn.execute(sql.Composed([query]))
        columns = [d.name for d in cur.description or ()]
        for row in cur.fetchall():
            key = {c: _text(row[columns.index(c)]) for c in shape.keys}
            got = detail_api.detail(conn, name, key)
            assert not got.truncated
            assert got.total == row[-1], (name, key, got)
            assert got.count == len(got.rows)
            groups += 1
    return groups


def test_detail_adds_up_to_every_group(db_url: str) -> None:
    conn = psycopg.connect(db_url, autocommit=True)
    stamp_updates_like_the_jobs(conn)
    wh = Settings(database_url=db_url)

    @given(
        rounds=st.lists(
            st.tuples(st.lists(WRITE, max_size=6), st.lists(WRITE, max_size=4)),
            min_size=1,
            max_size=3,
        )
    )
    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    def workload(rounds: list[tuple[list[tuple[object, ...]], list[tuple[object, ...]]]]) -> None:
        conn.execute(RESET)
        counts = {"orders": 0, "items": 0}
        now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

        def apply(writes: list[tuple[object, ...]]) -> None:
            for w in writes:
                if w[0] == "order":
                    _, delivery, customer, status, items = w
                    counts["orders"] += 1
                    conn.execute(
                        "INSERT INTO operations.orders (order_id, order_date, delivery_date, "
                        "customer_id, status) VALUES (%s, '2026-12-01', %s, %s, %s)",
                        (counts["orders"], _date(delivery), customer, status),  # type: ignore[arg-type]
                    )
                    for product, quanity in items:  # type: ignore[attr-defined]
                        counts["items"] += 1
                        conn.execute(
                            "INSERT INTO operations.order_items (order_item_id, order_id, "
                            "product_id, quanity) VALUES (%s, %s, %s, %s)",
                            (counts["items"], counts["orders"], product, quanity),
                        )
                elif w[0] == "status" and counts["orders"]:
                    conn.execute(
                        "UPDATE operations.orders SET status = %s WHERE order_id = %s",
                        (w[2], 1 + int(w[1]) % counts["orders"]),  # type: ignore[call-overload]
                    )
                elif w[0] == "item" and counts["items"]:
                    conn.execute(
                        "UPDATE operations.order_items SET order_id = %s, product_id = %s, "
                        "quanity = %s WHERE order_item_id = %s",
                        (w[2], w[3], w[4], 1 + int(w[1]) % counts["items"]),  # type: ignore[call-overload]
                    )
                elif w[0] == "delete" and counts["orders"] and counts["items"]:
                    item = bool(w[2])
                    k = 1 + int(w[1]) % counts["items" if item else "orders"]  # type: ignore[call-overload]
                    table, column = (
                        ("order_items", "order_item_id") if item else ("orders", "order_id")
                    )
                    conn.execute(
                        sql.SQL("DELETE FROM {} WHERE {} = %s").format(
                            sql.Identifier("operations", table), sql.Identifier(column)
                        ),
                        (k,),
                    )
                    tombstones(db_url, **{"items" if item else "orders": [k]})

        for settled, late in rounds:
            apply(settled)
            copy_batch(db_url, db_url)
            now += timedelta(hours=1)
            refresh(wh, now=now)
            assert_details_add_up(conn)
            apply(late)  # staged, not refreshed: the detail reads the state as of the refresh
            copy_batch(db_url, db_url)
            behind = conn.execute(
                "SELECT refreshed_batch_id < (SELECT max(batch_id) FROM staging.sync_batches) "
                "FROM analytics.snapshot"
            ).fetchone()
            assert behind == (True,)
            assert_details_add_up(conn)

    try:
        workload()
    finally:
        conn.close()


def test_detail_rows_and_usage_errors(db_url: str) -> None:
    conn = psycopg.connect(db_url, autocommit=True)
    conn.execute(RESET)
    conn.execute(
        "INSERT INTO operations.orders (order_id, delivery_date, customer_id, status) VALUES "
        "(1, '2026-12-17', 1, 'PENDING'), (2, '2026-12-17', 9, 'PENDING'), "
        "(3, NULL, 2, 'PENDING'), "
        "(4, '2026-12-17', 1, 'COMPLETED')"
    )
    conn.execute(
        "INSERT INTO operations.order_items (order_item_id, order_id, product_id, quanity) VALUES "
        "(1, 1, 1, 5), (2, 2, 1, NULL), (3, 4, 1, 7)"
    )
    copy_batch(db_url, db_url)
    refresh(Settings(database_url=db_url))
    got = detail_api.detail(
        conn, "open_orders", {"delivery_date": "2026-12-17", "status": "PENDING"}
    )
    assert got.columns == ["order_id", "delivery_date", "customer_id", "customer_name", "status"]
    assert [r[0] for r in got.rows] == [1, 2]
    assert [r[3] for r in got.rows] == ["Ann", None]  # customer 9 is unknown
    assert got.total == 2
    nulls = detail_api.detail(conn, "top_dates", {"delivery_date": None})
    assert [r[0] for r in nulls.rows] == [3]
    items = detail_api.detail(conn, "pending_items", {"product_id": "1"})
    assert items.columns == ["order_item_id", "order_id", "product_id", "product_name", "quanity"]
    assert (items.total, [r[0] for r in items.rows]) == (5, [1, 2])
    one = detail_api.detail(conn, "top_customers", {"customer_id": "1"}, limit=1)
    assert (one.total, one.count, len(one.rows), one.truncated) == (1, 1, 1, False)
    cut = detail_api.detail(conn, "open_orders", {}, limit=2)
    assert (cut.total, cut.count, len(cut.rows), cut.truncated) == (3, 3, 2, True)
    with pytest.raises(UnknownReport):
        detail_api.detail(conn, "nope", {})
    with pytest.raises(BadArgument, match="no key column 'status'"):
        detail_api.detail(conn, "top_dates", {"status": "PENDING"})
    with pytest.raises(BadArgument, match="is not a date"):
        detail_api.detail(conn, "top_dates", {"delivery_date": "17 Dec"})
    conn.close()


def _one_order_each(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(RESET)
        conn.execute(
            "INSERT INTO operations.orders (order_id, delivery_date, customer_id, status) VALUES "
            "(1, '2026-12-17', 1, 'PENDING'), (2, NULL, 2, 'PENDING'), (3, NULL, 3, NULL)"
        )
    copy_batch(db_url, db_url)
    refresh(Settings(database_url=db_url))


def test_cli_detail(db_url: str, cli_env: Callable[..., None]) -> None:
    _one_order_each(db_url)
    cli_env(database_url=db_url)
    res = run(
        "detail", "open_orders", "--where", "delivery_date=2026-12-17", "-w", "status=PENDING"
    )
    assert res.exit_code == 0, res.stderr
    assert res.stdout == (
        "order_id,delivery_date,customer_id,customer_name,status\n1,2026-12-17,1,Ann,PENDING\n"
    )
    res = run("detail", "top_dates", "--where", "delivery_date=", "--format", "json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout) == [
        {
            "order_id": 2,
            "delivery_date": None,
            "customer_id": 2,
            "customer_name": "Bob",
            "status": "PENDING",
        }
    ]
    res = run("detail", "open_orders", "--limit", "1")
    assert res.exit_code == 0, res.stderr
    assert len(res.stdout.splitlines()) == 2
    assert "wrote 1 of 2 rows; raise --limit for more" in res.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["detail", "nope"], "Unknown report 'nope'"),
        (["detail", "top_dates", "--where", "status=PENDING"], "top_dates has no key column"),
        (["detail", "top_dates", "--where", "delivery_date=soon"], "is not a date value"),
        (["detail", "top_customers", "--where", "customer_id"], "is not COLUMN=VALUE"),
        (["detail", "top_customers", "--format", "xml"], "Unknown format 'xml'"),
        (["detail", "top_customers", "--limit", "0"], "--limit must be between 1"),
    ],
)
def test_cli_detail_usage_errors(
    db_url: str, cli_env: Callable[..., None], args: list[str], needle: str
) -> None:
    _one_order_each(db_url)
    cli_env(database_url=db_url)
    res = run(*args)
    assert res.exit_code == 2, res.stderr
    assert needle in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_a_row_deleted_after_the_refresh_is_still_in_the_detail(db_url: str) -> None:
    """The reports still count an order deleted by a batch they do not include yet: so does the
    detail, though the latest state no longer holds it."""
    _one_order_each(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM operations.orders WHERE order_id = 1")
        conn.execute("UPDATE operations.orders SET status = 'COMPLETED' WHERE order_id = 2")
        tombstones(db_url, orders=[1])
        copy_batch(db_url, db_url)
        assert conn.execute("SELECT count(*) FROM staging.orders_state").fetchone() == (2,)
        got = detail_api.detail(conn, "top_customers", {})
        assert [r[0] for r in got.rows] == [1, 2]  # as of the refresh: both PENDING
        refresh(Settings(database_url=db_url))
        assert detail_api.detail(conn, "top_customers", {}).rows == []
