"""Refresh scenarios a reader would write by hand, the rebuild rules, readers during refreshes,
and the cost rule (the current-day refresh reads staging through its indexes only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from acme_mv import migrate
from acme_mv.config import Settings
from acme_mv.errors import NotMigrated
from acme_mv.refresh import refresh
from tests.reports_oracle import actual, assert_views_match, expected
from tests.staging_copy import copy_batch

DAY1 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class World:
    """The one-database deployment: source, staging and analytics in ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)
        self.settings = Settings(database_url=url)
        self.now = DAY1

    def sql(self, query: str, *params: object) -> None:
        self.conn.execute(query, params or None)

    def sync(self, *, full: bool = False) -> None:
        copy_batch(self.url, self.url, full=full)

    def refresh(self, mode: str = "auto", *, next_day: bool = False) -> bool:
        if next_day:
            self.now += timedelta(days=1)
        return refresh(self.settings, mode=mode, now=self.now).rebuilt_historic  # type: ignore[arg-type]

    def check(self) -> None:
        """The views equal the reports from scratch (the source is as synced)."""
        assert_views_match(self.conn, expected(self.conn))

    def report(self, name: str) -> list[tuple[object, ...]]:
        return actual(self.conn)[name]


@pytest.fixture
def world(db_url: str) -> World:
    w = World(db_url)
    w.sql("INSERT INTO operations.customers (customer_name) VALUES ('Ann'), ('Bob'), ('Cy')")
    w.sql("INSERT INTO operations.products (product_name, barcode, unity_price) VALUES ('bolt', 'b', 1), ('nut', 'n', 2)")
    return w


def test_first_refresh_rebuilds_then_only_the_current_part(world: World) -> None:
    world.sql("INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES ('2026-12-11', 1, 'PENDING')")
    world.sync()
    assert world.refresh() is True
    world.check()
    assert world.refresh() is False
    assert world.refresh("current") is False
    assert world.refresh("historic") is True
    assert world.refresh(next_day=True) is True
    world.check()


def test_an_order_counted_historic_that_changes_status_today(world: World) -> None:
    world.sql("INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES ('2026-12-11', 1, 'PENDING')")
    world.sql("INSERT INTO operations.order_items (order_id, product_id, quanity) VALUES (1, 1, 10), (1, 2, NULL)")
    world.sync()
    world.refresh()
    world.sql("UPDATE operations.orders SET status = 'PROCESSING' WHERE order_id = 1")
    world.sync()
    assert world.refresh() is False
    world.check()
    assert world.report("open_orders") == [(datetime(2026, 12, 11).date(), "PROCESSING", 1)]
    assert world.report("top_customers") == []
    assert world.report("pending_items") == [(1, "bolt", 10)]


def test_an_order_completed_today_leaves_every_report(world: World) -> None:
    world.sql("INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES (NULL, 2, 'PENDING')")
    world.sql("INSERT INTO operations.order_items (order_id, product_id, quanity) VALUES (1, 1, 3)")
    world.sync()
    world.refresh()
    assert world.report("open_orders") == [(None, "PENDING", 1)]
    world.sql("UPDATE operations.orders SET status = 'COMPLETED' WHERE order_id = 1")
    world.sync()
    world.refresh()
    world.check()
    assert world.report("open_orders") == world.report("pending_items") == world.report("top_customers") == []


def test_items_arriving_before_their_order(world: World) -> None:
    world.sql("INSERT INTO operations.order_items (order_id, product_id, quanity) VALUES (7, 2, 4)")
    world.sync()
    world.refresh()
    assert world.report("pending_items") == []
    world.sql("INSERT INTO operations.orders (order_id, delivery_date, customer_id, status) VALUES (7, '2026-12-12', 9, 'PENDING')")
    world.sync()
    assert world.refresh() is False
    world.check()
    assert world.report("pending_items") == [(2, "nut", 4)]
    assert world.report("top_customers") == [(9, None, 1)]  # an unknown customer: no name


def test_a_renamed_product_shows_its_new_name_after_the_next_sync(world: World) -> None:
    world.sql("INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES ('2026-12-11', 1, 'PENDING')")
    world.sql("INSERT INTO operations.order_items (order_id, product_id, quanity) VALUES (1, 1, 5), (1, 3, 6)")
    world.sync()
    world.refresh()
    world.sql("UPDATE operations.products SET product_name = 'hex bolt' WHERE product_id = 1")
    world.sync()
    world.refresh()
    world.check()
    assert world.report("pending_items") == [(1, "hex bolt", 5), (3, None, 6)]


def test_top_ties_go_to_the_earlier_date_and_the_lower_customer(world: World) -> None:
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
        "(NULL, 3, 'PENDING'), ('2026-12-13', 3, 'PENDING'), ('2026-12-12', 2, 'PENDING'), "
        "('2026-12-11', 1, 'PENDING'), ('2026-12-14', NULL, 'PENDING')"
    )
    world.sync()
    world.refresh()
    world.check()
    rows = world.conn.execute("SELECT * FROM analytics.top_dates").fetchall()
    assert [r[0].isoformat() for r in rows] == ["2026-12-11", "2026-12-12", "2026-12-13"]
    rows = world.conn.execute("SELECT customer_id, pending_orders FROM analytics.top_customers").fetchall()
    assert rows == [(3, 2), (1, 1), (2, 1)]


def test_a_full_recopy_rebuilds_the_historic_part_even_when_asked_for_current(world: World) -> None:
    world.sql("INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES ('2026-12-11', 1, 'PENDING')")
    world.sync()
    world.refresh()
    world.sync(full=True)
    assert world.refresh("current") is True
    world.check()
    assert world.report("open_orders") == [(datetime(2026, 12, 11).date(), "PENDING", 1)]


def test_late_rows_staged_after_the_snapshot_count(world: World) -> None:
    world.sql("INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES ('2026-12-11', 1, 'PENDING')")
    world.sync()
    world.refresh()
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status, updated_at) "
        "VALUES ('2026-12-11', 2, 'PENDING', localtimestamp - interval '1 day')"
    )
    world.sync()
    world.refresh()
    world.check()
    assert world.report("open_orders") == [(datetime(2026, 12, 11).date(), "PENDING", 2)]


def test_refresh_needs_a_migrated_warehouse(db_url: str) -> None:
    migrate.downgrade(db_url, "0001_staging")
    with pytest.raises(NotMigrated, match="acme-mv migrate"):
        refresh(Settings(database_url=db_url))


def test_naive_now_is_rejected(world: World) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        refresh(world.settings, now=datetime(2026, 12, 1))
