"""Refresh scenarios a reader would write by hand, the rebuild rules, readers during refreshes,
and the cost rule (the current-day refresh reads staging through its indexes only)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import TupleRow

from acme_mv import migrate
from acme_mv.config import Settings
from acme_mv.errors import NotMigrated, RefreshFailed
from acme_mv.reports.refresh import LOCK_CLASS, LOCK_REFRESH, refresh
from acme_mv.reports.verify import verify
from tests.support.cli_runner import run
from tests.support.reports_oracle import actual, assert_views_match, expected
from tests.support.source_writes import stamp_updates_like_the_jobs
from tests.support.staging_copy import copy_batch
from tests.support.stats import settled

DAY1 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


pytestmark = pytest.mark.usefixtures("no_safety_margin")


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
        """The views equal the reports from scratch (the source is as synced), and verify agrees."""
        assert_views_match(self.conn, expected(self.conn))
        verify(self.settings)

    def newest_batch(self) -> int:
        row = self.conn.execute("SELECT max(batch_id) FROM staging.sync_batches").fetchone()
        assert row is not None
        return int(str(row[0]))

    def report(self, name: str) -> list[tuple[object, ...]]:
        return actual(self.conn)[name]


@pytest.fixture
def world(db_url: str) -> World:
    w = World(db_url)
    stamp_updates_like_the_jobs(w.conn)
    w.sql("INSERT INTO operations.customers (customer_name) VALUES ('Ann'), ('Bob'), ('Cy')")
    w.sql(
        "INSERT INTO operations.products (product_name, barcode, unity_price) VALUES "
        "('bolt', 'b', 1), ('nut', 'n', 2)"
    )
    return w


def test_first_refresh_rebuilds_then_only_the_current_part(world: World) -> None:
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
        "('2026-12-11', 1, 'PENDING')"
    )
    world.sync()
    assert world.refresh() is True
    world.check()
    assert world.refresh() is False
    assert world.refresh("current") is False
    assert world.refresh("historic") is True
    assert world.refresh(next_day=True) is True
    world.check()


def test_an_order_counted_historic_that_changes_status_today(world: World) -> None:
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
        "('2026-12-11', 1, 'PENDING')"
    )
    world.sql(
        "INSERT INTO operations.order_items (order_id, product_id, quanity) "
        "VALUES (1, 1, 10), (1, 2, NULL)"
    )
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
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) "
        "VALUES (NULL, 2, 'PENDING')"
    )
    world.sql("INSERT INTO operations.order_items (order_id, product_id, quanity) VALUES (1, 1, 3)")
    world.sync()
    world.refresh()
    assert world.report("open_orders") == [(None, "PENDING", 1)]
    world.sql("UPDATE operations.orders SET status = 'COMPLETED' WHERE order_id = 1")
    world.sync()
    world.refresh()
    world.check()
    assert (
        world.report("open_orders")
        == world.report("pending_items")
        == world.report("top_customers")
        == []
    )


def test_items_arriving_before_their_order(world: World) -> None:
    world.sql("INSERT INTO operations.order_items (order_id, product_id, quanity) VALUES (7, 2, 4)")
    world.sync()
    world.refresh()
    assert world.report("pending_items") == []
    world.sql(
        "INSERT INTO operations.orders (order_id, delivery_date, customer_id, status) VALUES (7, "
        "'2026-12-12', 9, 'PENDING')"
    )
    world.sync()
    assert world.refresh() is False
    world.check()
    assert world.report("pending_items") == [(2, "nut", 4)]
    assert world.report("top_customers") == [(9, None, 1)]  # an unknown customer: no name


def test_a_renamed_product_shows_its_new_name_after_the_next_sync(world: World) -> None:
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
        "('2026-12-11', 1, 'PENDING')"
    )
    world.sql(
        "INSERT INTO operations.order_items (order_id, product_id, quanity) "
        "VALUES (1, 1, 5), (1, 3, 6)"
    )
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
    rows = world.conn.execute(
        "SELECT customer_id, pending_orders FROM analytics.top_customers"
    ).fetchall()
    assert rows == [(3, 2), (1, 1), (2, 1)]


def test_a_full_sync_needs_no_historic_rebuild_its_tombstones_are_deltas(world: World) -> None:
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) "
        "VALUES ('2026-12-11', 1, 'PENDING'), ('2026-12-12', 2, 'PENDING')"
    )
    world.sql("INSERT INTO operations.order_items (order_id, product_id, quanity) VALUES (2, 1, 5)")
    world.sync()
    world.refresh()
    world.sql("DELETE FROM operations.orders WHERE order_id = 2")  # invisible to the cursor
    world.sync(full=True)  # appends a tombstone; nothing is re-copied from scratch
    assert world.refresh("current") is False
    world.check()
    assert world.report("open_orders") == [(datetime(2026, 12, 11).date(), "PENDING", 1)]
    assert world.report("pending_items") == []


def test_a_full_sync_retracts_the_rows_gone_from_the_source_without_a_rebuild(world: World) -> None:
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
        "('2026-12-11', 1, 'PENDING')"
    )
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
        "('2026-12-12', 2, 'PENDING')"
    )
    world.sql(
        "INSERT INTO operations.order_items (order_id, product_id, quanity) "
        "VALUES (1, 1, 4), (2, 2, 5)"
    )
    world.sync()
    world.refresh()
    world.sql("DELETE FROM operations.orders WHERE order_id = 2")
    world.sql("DELETE FROM operations.order_items WHERE order_id = 1")
    world.sync(full=True)
    assert world.refresh("current") is False  # the full batch's deltas retract what is gone
    world.check()
    assert world.report("open_orders") == [(datetime(2026, 12, 11).date(), "PENDING", 1)]
    assert world.report("pending_items") == []
    assert world.refresh("rebuild") is True
    world.check()


def test_late_rows_staged_after_the_snapshot_count(world: World) -> None:
    """A writer's transaction starts (stamping updated_at) before a sync and a day rollover,
    and commits after them: its rows reach staging late and still count exactly once."""
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
        "('2026-12-11', 1, 'PENDING')"
    )
    world.sync()
    world.refresh()
    with psycopg.connect(world.url) as late:
        late.execute(
            "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
            "('2026-12-11', 2, 'PENDING')"
        )
        late.execute("UPDATE operations.orders SET status = 'PROCESSING' WHERE order_id = 1")
        world.sync()  # the writer is still open: nothing of it is visible yet
        world.refresh(next_day=True)
        world.check()
        assert world.report("open_orders") == [(datetime(2026, 12, 11).date(), "PENDING", 1)]
    # committed now, with updated_at older than the previous sync's read
    world.sync()
    world.refresh()
    world.check()
    assert world.report("open_orders") == [
        (datetime(2026, 12, 11).date(), "PENDING", 1),
        (datetime(2026, 12, 11).date(), "PROCESSING", 1),
    ]


def test_refresh_needs_a_migrated_warehouse(db_url: str) -> None:
    migrate.downgrade(db_url, "0001_staging")
    with pytest.raises(NotMigrated) as info:
        refresh(Settings(database_url=db_url))
    assert (info.value.current, info.value.head) == ("0001_staging", migrate.head_revision())


def test_naive_now_is_rejected(world: World) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        refresh(world.settings, now=datetime(2026, 12, 1))


def test_cli_refresh(world: World, cli_env: Callable[..., None]) -> None:
    cli_env(database_url=world.url)
    res = run("refresh")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.startswith("refreshed historic + current (first refresh)")
    res = run("refresh", "--current")
    assert res.stdout.startswith("refreshed current in")
    res = run("refresh", "--historic")
    assert res.stdout.startswith("refreshed historic + current (asked for (--historic))")
    res = run("refresh", "--rebuild")
    assert res.stdout.startswith("refreshed historic + current (asked for (--rebuild))")
    res = run("refresh", "--historic", "--current")
    assert res.exit_code == 2  # a usage error
    assert "one of --historic, --current and --rebuild" in res.stderr


TOTALS = """
SELECT (SELECT coalesce(sum(open_orders), 0) FROM analytics.open_orders),
       (SELECT coalesce(sum(open_orders), 0) FROM analytics.top_dates),
       (SELECT coalesce(sum(pending_items), 0) FROM analytics.pending_items),
       (SELECT coalesce(sum(pending_orders), 0) FROM analytics.pending_orders_by_customer)
"""
TOTALS_FROM_SCRATCH = """
SELECT (SELECT count(*) FROM operations.orders o WHERE o.status <> 'COMPLETED'),
       (SELECT coalesce(sum(n), 0)
        FROM (SELECT count(*) AS n FROM operations.orders o WHERE o.status <> 'COMPLETED'
              GROUP BY delivery_date ORDER BY n DESC, delivery_date NULLS LAST LIMIT 3) t),
       (SELECT coalesce(sum(coalesce(i.quanity, 0)), 0) FROM operations.order_items i
        JOIN operations.orders o USING (order_id)
        WHERE o.status <> 'COMPLETED' AND i.product_id IS NOT NULL),
       (SELECT count(*) FROM operations.orders o
        WHERE o.status = 'PENDING' AND o.customer_id IS NOT NULL)
"""


def test_readers_are_never_blocked_and_never_see_a_mix(world: World) -> None:
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) "
        "SELECT DATE '2026-12-10' + g % 7, g % 50, 'PENDING' FROM generate_series(1, 3000) g"
    )
    world.sql(
        "INSERT INTO operations.order_items (order_id, product_id, quanity) "
        "SELECT 1 + g % 3000, g % 40, g % 10 FROM generate_series(1, 9000) g"
    )
    world.sync()
    world.refresh()
    states = {tuple(world.conn.execute(TOTALS_FROM_SCRATCH).fetchone() or ())}
    seen: list[tuple[object, ...]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            with psycopg.connect(world.url, autocommit=True) as conn:
                conn.execute("SET statement_timeout = '2s'")
                while not done.is_set():
                    seen.append(tuple(conn.execute(TOTALS).fetchone() or ()))
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for step in range(6):
            # every report moves at once: a mix of old and new parts would show
            world.sql(
                "UPDATE operations.orders SET status = %s WHERE order_id %% 6 = %s",
                "COMPLETED" if step % 2 else "PROCESSING",
                step,
            )
            world.sync()
            states.add(tuple(world.conn.execute(TOTALS_FROM_SCRATCH).fetchone() or ()))
            world.refresh("historic" if step % 2 else "current")
    finally:
        done.set()
        thread.join()
    assert not errors, errors
    assert len(seen) > 10
    assert len(states) == 7
    assert set(seen) <= states, set(seen) - states


#: heap tuples read from a table (sequential or through an index), as the statistics count them
TUPLES_READ = """
SELECT t.relname, t.seq_tup_read + coalesce(t.idx_tup_fetch, 0)
       + coalesce((SELECT sum(i.idx_tup_read) FROM pg_stat_user_indexes i WHERE i.relid = t.relid
                   AND i.indexrelname NOT LIKE '%%batch_idx'), 0)
FROM pg_stat_user_tables t WHERE t.schemaname = %s
"""


def tuples_read(conn: psycopg.Connection[TupleRow], schema: str) -> dict[str, int]:
    """Per table of ``schema``: tuples read so far, every ended session's counts included."""
    return {str(r[0]): int(r[1]) for r in settled(conn, TUPLES_READ, (schema,))}


def read_since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {t: after[t] - before.get(t, 0) for t in after if after[t] - before.get(t, 0)}


def test_a_batch_and_a_refresh_read_only_what_changed(world: World) -> None:
    """Cost without timing: with 20,000 orders and 60,000 items staged, a batch of 20 changed
    orders and 60 changed items reads a few rows of staging per changed row (the batch's rows,
    their before-states, the items of the orders that closed), never a scan; and the refresh
    reads no staging at all, only the new batch's delta rows, never the day's."""
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) "
        "SELECT DATE '2026-12-10' + g % 5000, g % 5000, "
        "(ARRAY['PENDING','PROCESSING','COMPLETED'])[1 + (g / 5000) % 3] "
        "FROM generate_series(1, 20000) g"
    )
    world.sql(
        "INSERT INTO operations.order_items (order_id, product_id, quanity) "
        "SELECT 1 + g % 20000, g % 5000, g % 100 FROM generate_series(1, 60000) g"
    )
    world.sync()
    world.refresh()
    # The first batch leaves thousands of delta rows per table (5,000 dates, customers and
    # products), the day's deltas that a refresh must not read again. The tables are analyzed
    # here and autovacuum kept off them, so the planner's statistics are the same in every run:
    # at that size every plan it may choose for one batch's range (an index scan or a bitmap scan
    # on batch_id) fetches only that batch's rows, while a plan or a query that read the day's
    # deltas reads the thousands.
    for table in ("open_orders_delta", "pending_items_delta", "pending_orders_delta"):
        world.sql(f"ALTER TABLE analytics.{table} SET (autovacuum_enabled = false)")
        world.sql(f"ANALYZE analytics.{table}")
    for _ in range(3):  # several cycles: the cost must not grow with the day's change
        world.sql(
            "UPDATE operations.orders SET status = 'COMPLETED' WHERE order_id IN "
            "(SELECT order_id FROM operations.orders WHERE status <> 'COMPLETED' "
            "ORDER BY random() LIMIT 20)"
        )
        world.sql(
            "UPDATE operations.order_items SET quanity = quanity + 1 WHERE order_item_id IN "
            "(SELECT order_item_id FROM operations.order_items ORDER BY random() LIMIT 60)"
        )
        before = tuples_read(world.conn, "staging")
        world.sync()
        staging = {
            t: n
            for t, n in read_since(before, tuples_read(world.conn, "staging")).items()
            if t in ("orders", "order_items", "orders_state", "order_items_state")
        }  # the mirrors (customers, products) are reloaded whole by design
        # 80 changed rows + 3 items of each of the 20 closed orders: < 20 tuples read per changed
        # row in all, the 20,000 + 60,000 staged rows are never scanned
        assert sum(staging.values()) < 20 * (80 + 60), staging
        before_s, before_a = (
            tuples_read(world.conn, "staging"),
            tuples_read(world.conn, "analytics"),
        )
        world.refresh()
        assert set(read_since(before_s, tuples_read(world.conn, "staging"))) <= {"sync_batches"}
        analytics = read_since(before_a, tuples_read(world.conn, "analytics"))
        new_rows = world.conn.execute(
            "SELECT (SELECT count(*) FROM analytics.open_orders_delta WHERE batch_id = %(b)s) "
            "+ (SELECT count(*) FROM analytics.pending_items_delta WHERE batch_id = %(b)s) "
            "+ (SELECT count(*) FROM analytics.pending_orders_delta WHERE batch_id = %(b)s)",
            {"b": world.newest_batch()},
        ).fetchone()
        assert new_rows is not None
        delta_read = sum(n for t, n in analytics.items() if t.endswith("_delta"))
        # each of the batch's delta rows is fetched once (the batch_id index's own entries are
        # not counted): the bound leaves room, the day's deltas are over 10,000 rows
        assert 0 < delta_read <= 2 * int(new_rows[0]), analytics
    world.check()


def test_separate_source_and_warehouse(source_url: str, warehouse_url: str) -> None:
    with psycopg.connect(source_url, autocommit=True) as src:
        stamp_updates_like_the_jobs(src)
        src.execute("INSERT INTO operations.customers (customer_name) VALUES ('Ann')")
        src.execute(
            "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES (NULL, 1, "
            "'PENDING'), ('2026-12-11', 2, 'PROCESSING')"
        )
        src.execute(
            "INSERT INTO operations.order_items (order_id, product_id, quanity) "
            "VALUES (1, 4, 3), (2, 4, 2)"
        )
        copy_batch(source_url, warehouse_url)
        refresh(Settings(database_url=warehouse_url, source_url=source_url))
        src.execute("UPDATE operations.orders SET status = 'COMPLETED' WHERE order_id = 2")
        copy_batch(source_url, warehouse_url)
        refresh(Settings(database_url=warehouse_url, source_url=source_url))
        with psycopg.connect(warehouse_url) as wh:
            assert_views_match(wh, expected(src))
            assert actual(wh)["pending_items"] == [(4, None, 3)]


def test_a_status_of_any_length_is_a_report_group_like_any_other(world: World) -> None:
    """A hand-written status longer than a B-tree entry may hold (2.7 kB) is counted, added to
    the current part, folded into the historic part and rebuilt, like a short one."""
    # random text: pglz would shrink a repeated character below the limit
    long_a, long_b = secrets.token_urlsafe(7_500), secrets.token_urlsafe(2_100)
    assert len(long_a) == 10_000 and len(long_b) == 2_800
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
        "('2026-12-11', 1, %s), ('2026-12-11', 2, %s), (NULL, 3, %s), ('2026-12-12', 1, 'PENDING')",
        long_a,
        long_a,
        long_b,
    )
    world.sync()
    world.refresh()
    world.check()
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
        "('2026-12-11', 2, %s), (NULL, 1, %s)",
        long_a,
        long_b,
    )
    world.sql("UPDATE operations.orders SET status = %s WHERE order_id = 4", long_b)
    world.sync()
    assert world.refresh() is False  # the current part: added ON CONFLICT
    world.check()
    assert (datetime(2026, 12, 11).date(), long_a, 3) in world.report("open_orders")
    assert world.refresh(next_day=True) is True  # folded into the historic part
    world.check()
    world.sql("UPDATE operations.orders SET status = 'COMPLETED' WHERE order_id = 1")
    world.sync()
    world.refresh("rebuild")
    world.check()
    assert (datetime(2026, 12, 11).date(), long_a, 2) in world.report("open_orders")


def test_a_refresh_that_fails_on_the_data_says_so_in_one_line(world: World) -> None:
    """A summary row the table refuses (here a CHECK a test adds) fails the refresh with
    RefreshFailed naming the table and its key, not as a lost connection; nothing is kept."""
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
        "('2026-12-11', 1, 'PENDING')"
    )
    world.sync()
    world.refresh()
    world.sql("ALTER TABLE analytics.open_orders_current ADD CONSTRAINT small CHECK (n < 2)")
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
        "('2026-12-11', 2, 'PROCESSING'), ('2026-12-11', 3, 'PROCESSING')"
    )
    world.sync()
    before = world.conn.execute("SELECT refreshed_batch_id FROM analytics.snapshot").fetchone()
    with pytest.raises(RefreshFailed) as info:
        world.refresh()
    message = str(info.value)
    assert "\n" not in message
    assert info.value.table == "analytics.open_orders_current"
    assert info.value.key == ("delivery_date", "status")
    assert "analytics.open_orders_current" in message and "(delivery_date, status)" in message
    assert "small" in message
    assert not info.value.transient
    after = world.conn.execute("SELECT refreshed_batch_id FROM analytics.snapshot").fetchone()
    assert after == before


def test_refreshes_on_one_kept_connection_and_a_failure_closes_it(world: World) -> None:
    """A process that refreshes after every batch keeps its connection; a refresh that fails
    on it closes it, so its session's refresh lock is gone and the next refresh runs."""
    kept = psycopg.connect(world.url, autocommit=True)
    for status in ("PENDING", "PROCESSING"):
        world.sql(
            "INSERT INTO operations.orders (delivery_date, customer_id, status) "
            "VALUES ('2026-12-11', 1, %s)",
            status,
        )
        world.sync()
        result = refresh(world.settings, now=world.now, conn=kept)
        assert result.refreshed_batch_id == world.newest_batch()
        world.check()
    assert not kept.closed
    kept.execute("SET default_transaction_read_only = on")  # its next writes fail
    world.sql(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) "
        "VALUES ('2026-12-12', 2, 'PENDING')"
    )
    world.sync()
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        refresh(world.settings, now=world.now, conn=kept)
    assert kept.closed
    # the server ends the closed session a moment later; a lock it kept would never be free
    world.sql("SET lock_timeout = '30s'")
    world.sql("SELECT pg_advisory_lock(%s, %s)", LOCK_CLASS, LOCK_REFRESH)
    world.sql("SELECT pg_advisory_unlock(%s, %s)", LOCK_CLASS, LOCK_REFRESH)
    world.sql("RESET lock_timeout")
    assert world.refresh() is False
    world.check()


def test_change_captures_refresher_refreshes_on_one_connection(world: World) -> None:
    """The stream's refresh thread keeps its connection across refreshes (each refresh after a
    batch would otherwise pay a connect), and every refresh includes the batches before it."""
    from acme_mv.cdc.refresher import Refresher

    refresher = Refresher(world.settings, min_interval_s=0)
    refresher.start()
    pids = set()
    try:
        for n in range(4):
            world.sql(
                "INSERT INTO operations.orders (delivery_date, customer_id, status) "
                "VALUES ('2026-12-11', 1, 'PENDING')"
            )
            world.sync()
            refresher.request()
            deadline = time.monotonic() + 60
            while refresher.pending and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not refresher.pending, f"refresh {n} did not happen"
            refresher.check()
            assert refresher._conn is not None
            pids.add(refresher._conn.info.backend_pid)
            world.check()
    finally:
        refresher.close()
    assert refresher.refreshes == 4
    assert len(pids) == 1
