"""Change capture against a real slot: setup in the slot's snapshot, streaming, tombstones,
drift."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

import psycopg
import pytest

from acme_mv import cdc
from acme_mv.cdc.errors import NotSetUp
from acme_mv.cdc.pgoutput import lsn_from_str
from acme_mv.errors import SchemaDrift
from acme_mv.run import health
from tests.support.cdc_helpers import Cdc, Streaming, drop_slot
from tests.support.cli_runner import run
from tests.support.database import DatabaseFactory
from tests.support.sync_helpers import compared_tables, execute, fill, scalar, versions

COUNTS = {"customers": 20, "products": 15, "orders": 200, "order_items": 600}


@pytest.fixture(params=["separate", "one-database"])
def world(request: pytest.FixtureRequest, make_db: DatabaseFactory, slot_name: str) -> Cdc:
    if request.param == "separate":
        return Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    url = make_db("both")
    return Cdc(src=url, wh=url, slot=slot_name)


def _writes(url: str) -> None:
    """Inserts, updates and hard deletes on every table, in several transactions."""
    fill(url, orders=30, order_items=50, customers=2, products=2)
    execute(url, "UPDATE operations.orders SET status = 'COMPLETED' WHERE order_id % 7 = 0")
    execute(
        url, "UPDATE operations.order_items SET quanity = quanity + 1 WHERE order_item_id % 5 = 0"
    )
    execute(url, "DELETE FROM operations.orders WHERE order_id % 11 = 0 AND status <> 'COMPLETED'")
    execute(url, "DELETE FROM operations.order_items WHERE order_item_id % 13 = 0")
    execute(url, "DELETE FROM operations.customers WHERE customer_id = 3")
    execute(url, "UPDATE operations.products SET product_name = 'renamed' WHERE product_id = 2")


def test_setup_copies_in_the_snapshot_then_the_stream_carries_every_change(world: Cdc) -> None:
    fill(world.src, **COUNTS)
    result = world.setup()
    assert result.created and result.batch_id is not None
    assert result.rows == COUNTS
    assert compared_tables(world.wh, result.batch_id) == []
    world.assert_staging_equals_source()
    _writes(world.src)
    streamed = world.catch_up()
    assert streamed.batches >= 1 and streamed.changes > 0
    world.assert_staging_equals_source()
    world.assert_reports_true()
    # deletes are tombstones: the key, every other contract column NULL
    # (keys inserted and deleted within one batch were never staged: they need no tombstone)
    tombstoned = scalar(
        world.wh,
        "SELECT array_agg(order_id ORDER BY order_id) FROM staging.orders_latest WHERE _deleted",
    )
    gone = scalar(
        world.src,
        "SELECT array_agg(g ORDER BY g) FROM generate_series(1, %s) g "
        "WHERE NOT EXISTS (SELECT 1 FROM operations.orders o WHERE o.order_id = g)",
        (COUNTS["orders"],),
    )
    assert gone and set(gone) <= set(tombstoned)
    assert (
        scalar(
            world.wh,
            "SELECT count(*) FROM staging.orders WHERE _deleted AND "
            "(order_date, delivery_date, customer_id, status, updated_at, updated_by, created_at, "
            "created_by) IS DISTINCT FROM (NULL::date, NULL::date, NULL::bigint, NULL::varchar, "
            "NULL::timestamp, NULL::bigint, NULL::timestamp, NULL::bigint)",
        )
        == 0
    )
    # one more catch-up with nothing new: nothing applied twice
    before = (versions(world.wh, "orders"), versions(world.wh, "order_items"))
    again = world.catch_up()
    assert again.changes == 0
    assert (versions(world.wh, "orders"), versions(world.wh, "order_items")) == before


def test_a_write_racing_the_setup_is_in_the_copy_or_the_stream_never_both(
    make_db: DatabaseFactory, slot_name: str
) -> None:
    """A transaction open while the slot is created commits after its snapshot: the stream carries
    it."""
    world = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    fill(world.src, **COUNTS)
    with psycopg.connect(world.src) as late:
        late.execute("UPDATE operations.orders SET status = 'LATE' WHERE order_id <= 5")
        # CREATE_REPLICATION_SLOT waits for transactions that already hold an xid: commit from a
        # thread
        import threading

        timer = threading.Timer(0.5, late.commit)
        timer.start()
        world.setup()
        timer.join()
    world.catch_up()
    world.assert_staging_equals_source()
    assert set(versions(world.wh, "orders").values()) <= {1, 2}


def test_truncate_tombstones_every_key_and_mirror_rows_go(
    make_db: DatabaseFactory, slot_name: str
) -> None:
    world = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    fill(world.src, **COUNTS)
    world.setup()
    execute(world.src, "TRUNCATE operations.orders, operations.customers")
    fill(world.src, orders=3)
    world.catch_up()
    world.assert_staging_equals_source()
    world.assert_reports_true()
    assert (
        scalar(world.wh, "SELECT count(*) FROM staging.orders_latest WHERE _deleted")
        == COUNTS["orders"]
    )


def test_an_added_column_the_reports_do_not_use_is_ignored(
    make_db: DatabaseFactory, slot_name: str
) -> None:
    world = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    fill(world.src, **COUNTS)
    world.setup()
    execute(world.src, "ALTER TABLE operations.orders ADD COLUMN priority text DEFAULT 'high'")
    # a new first column too: columns are matched by name, not position
    execute(world.src, "ALTER TABLE operations.order_items DROP COLUMN created_by")
    execute(world.src, "ALTER TABLE operations.order_items ADD COLUMN created_by bigint")
    fill(world.src, orders=10)
    execute(
        world.src,
        "UPDATE operations.orders SET status = 'PENDING', priority = 'low' WHERE order_id <= 20",
    )
    world.catch_up()
    world.assert_staging_equals_source()
    world.assert_reports_true()


def test_a_contract_column_type_change_stops_with_nothing_applied(
    make_db: DatabaseFactory, slot_name: str
) -> None:
    world = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    fill(world.src, **COUNTS)
    world.setup()
    execute(world.src, "UPDATE operations.orders SET status = 'BEFORE' WHERE order_id = 1")
    world.catch_up()
    position = world.saved_lsn()
    batches = scalar(world.wh, "SELECT count(*) FROM staging.sync_batches")
    with psycopg.connect(
        world.src
    ) as conn:  # one transaction: a good change, then the drifted table
        conn.execute("UPDATE operations.order_items SET quanity = 999 WHERE order_item_id = 1")
        conn.execute("ALTER TABLE operations.orders ALTER COLUMN customer_id TYPE integer")
        conn.execute("UPDATE operations.orders SET status = 'AFTER' WHERE order_id = 1")
    with pytest.raises(SchemaDrift) as first:
        world.catch_up()
    drift = ("operations.orders", "customer_id", "bigint", "integer")
    assert (
        first.value.table,
        first.value.column,
        first.value.expected,
        first.value.actual,
    ) == drift
    # nothing of that transaction applied, the position neither saved nor confirmed past it
    assert scalar(world.wh, "SELECT count(*) FROM staging.sync_batches") == batches
    assert (
        scalar(world.wh, "SELECT status FROM staging.orders_latest WHERE order_id = 1") == "BEFORE"
    )
    assert (
        scalar(world.wh, "SELECT quanity FROM staging.order_items_latest WHERE order_item_id = 1")
        != 999
    )
    assert world.saved_lsn() == position
    confirmed = scalar(
        world.src,
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        (world.slot,),
    )
    assert lsn_from_str(confirmed) <= position
    # it stops the same way on every restart until the source is fixed
    with pytest.raises(SchemaDrift) as info:
        world.catch_up()
    assert (info.value.table, info.value.column, info.value.expected, info.value.actual) == drift


def test_stream_without_setup_says_so(make_db: DatabaseFactory, slot_name: str) -> None:
    world = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    with pytest.raises(NotSetUp, match="run acme-mv cdc setup"):
        cdc.stream(world.settings, slot=world.slot)


def test_a_slot_behind_the_warehouse_resends_nothing_twice(
    make_db: DatabaseFactory, slot_name: str, server_url: str
) -> None:
    """The crash window between the warehouse commit and the confirmation, made deterministic: a
    second slot created at setup time has confirmed nothing, the warehouse's position is moved
    to it, and streaming it re-reads every transaction already applied: all are skipped."""
    world = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    fill(world.src, **COUNTS)
    world.setup()
    behind = f"{slot_name}_b"
    execute(world.src, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (behind,))
    try:
        _writes(world.src)
        world.catch_up()
        before = (versions(world.wh, "orders"), versions(world.wh, "order_items"))
        execute(world.wh, "UPDATE staging.cdc_state SET slot_name = %s", (behind,))
        lagging = Cdc(src=world.src, wh=world.wh, slot=behind)
        again = lagging.catch_up()
        assert again.changes == 0
        assert (versions(world.wh, "orders"), versions(world.wh, "order_items")) == before
        _writes(world.src)
        assert lagging.catch_up().changes > 0
        lagging.assert_staging_equals_source()
        lagging.assert_reports_true()
    finally:
        drop_slot(server_url, behind)


def _refreshed_and_newest(world: Cdc) -> tuple[int | None, int]:
    return (
        scalar(world.wh, "SELECT refreshed_batch_id FROM analytics.snapshot"),
        scalar(world.wh, "SELECT max(batch_id) FROM staging.sync_batches"),
    )


def test_the_reports_include_the_setup_batch_and_a_re_snapshot_once_the_stream_runs(
    world: Cdc, cli_env: Callable[..., None]
) -> None:
    """``cdc setup`` writes a batch; a stream that starts with nothing new to apply still
    refreshes it in, and so after ``cdc drop`` + a changed source + ``cdc setup``. Meanwhile
    ``verify`` says the reports are behind."""
    fill(world.src, **COUNTS)
    for round_ in range(2):
        if round_:
            cdc.drop(world.settings, slot=world.slot)
            execute(world.src, "UPDATE operations.orders SET status = 'PENDING' WHERE order_id < 9")
            execute(world.src, "DELETE FROM operations.orders WHERE order_id = 20")
        world.setup()
        cli_env(database_url=world.wh, source_url=world.src)
        res = run("verify")
        assert res.exit_code == 6, res.stderr
        refreshed, newest = _refreshed_and_newest(world)
        assert res.stderr.strip().splitlines() == [
            "Error: verify: the reports are behind staging: "
            f"refreshed up to batch {refreshed or 0}, "
            f"staging holds batches up to {newest}; run acme-mv refresh "
            "(a running acme-mv run refreshes after each batch)"
        ]
        with world.streaming() as handle:
            deadline = time.monotonic() + 30
            while (got := _refreshed_and_newest(world))[0] != got[1]:
                assert handle.error is None, handle.error
                assert time.monotonic() < deadline, f"not refreshed: {got}"
                time.sleep(0.1)
            world.assert_reports_true()
        assert run("verify").exit_code == 0


def test_a_batch_records_its_last_source_commit_as_its_moment(world: Cdc) -> None:
    """Freshness under change capture (acme_mv.run.health): the batch's moment of the source is
    its last transaction's commit, earlier than the apply."""
    fill(world.src, **COUNTS)
    world.setup()
    world.catch_up()
    with psycopg.connect(world.src) as conn:
        began = conn.execute("SELECT now()").fetchone()
        conn.execute("UPDATE operations.orders SET status = 'PENDING' WHERE order_id = 1")
    committed = scalar(world.src, "SELECT clock_timestamp()")
    world.catch_up()
    with psycopg.connect(world.wh) as conn:
        newest = conn.execute(
            "SELECT source_at, started_at FROM staging.sync_batches ORDER BY batch_id DESC LIMIT 1"
        ).fetchone()
    assert began is not None and newest is not None
    source_at, started_at = newest
    assert began[0] <= source_at <= committed < started_at


def test_a_backlog_fills_batches_to_batch_rows_whatever_batch_ms(world: Cdc) -> None:
    """Transactions committed while nothing streamed are a backlog: its batches close at
    ``batch_rows`` changes, not ``batch_ms`` after their first transaction (fewer, larger
    warehouse transactions catch up sooner)."""
    fill(world.src, orders=50)
    world.setup()
    execute(
        world.src,
        "DO $$ BEGIN FOR i IN 1..600 LOOP "
        "UPDATE operations.orders SET status = 'S' || i WHERE order_id = 1 + i % 50; COMMIT; "
        "END LOOP; END $$",
    )
    sizes: list[int] = []
    result = world.catch_up(
        batch_rows=200, batch_ms=1, refresh_views=False, on_batch=lambda b: sizes.append(b.changes)
    )
    assert result.changes == sum(sizes) == 600
    # a batch closes when it and the open transaction hold batch_rows changes; one closed
    # 1 ms after its first transaction would hold a few dozen
    assert max(sizes) >= 199, sizes
    world.assert_staging_equals_source()


def test_batches_count_their_versions_and_tombstones(world: Cdc) -> None:
    fill(world.src, orders=20)
    world.setup()
    written: list[cdc.BatchResult] = []
    execute(world.src, "UPDATE operations.orders SET status = 'X' WHERE order_id <= 5")
    world.catch_up(refresh_views=False, on_batch=written.append)
    assert [(b.written.versions, b.written.tombstones) for b in written] == [(5, 0)]
    written.clear()
    execute(world.src, "DELETE FROM operations.orders WHERE order_id <= 3")
    world.catch_up(refresh_views=False, on_batch=written.append)
    assert [(b.written.versions, b.written.tombstones) for b in written] == [(0, 3)]


def _read_at(world: Cdc) -> datetime | None:
    with psycopg.connect(world.wh) as conn:
        return health.read_freshness(conn).read_at


def test_an_idle_stream_caught_up_keeps_the_reports_fresh(
    world: Cdc, cli_env: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    """A heartbeat that finds everything the source had written applied moves the newest
    batch's moment of the source to then: the reports, once they include it, are that fresh;
    not before (a resync's batch not yet refreshed), and not with a second slot."""
    fill(world.src, **COUNTS)
    world.setup()
    world.catch_up()
    probed = scalar(world.src, "SELECT clock_timestamp()")
    first = _read_at(world)
    assert first is not None and first < probed
    with world.streaming() as handle:
        _wait_read_at(world, handle, past=probed)
    # a resync's batch, not yet refreshed: the reports keep the moment they have
    cli_env(database_url=world.wh, source_url=world.src)
    res = run("cdc", "resync", "--table", "orders", "--slot", world.slot)
    assert res.exit_code == 0, res.stderr
    before = _read_at(world)
    with world.streaming(refresh_views=False) as handle:
        _wait_caught_up(caplog, handle)
    assert _read_at(world) == before
    # refreshed, the heartbeats move it on
    assert run("refresh").exit_code == 0
    probed = scalar(world.src, "SELECT clock_timestamp()")
    with world.streaming() as handle:
        _wait_read_at(world, handle, past=probed)
    # a second slot's state in the warehouse: no heartbeat speaks for it
    execute(
        world.wh,
        "INSERT INTO staging.cdc_state (slot_name, publication, lsn) VALUES ('other', 'p', '0/0')",
    )
    held = _read_at(world)
    with world.streaming() as handle:
        _wait_caught_up(caplog, handle)
    assert _read_at(world) == held


def _wait_read_at(world: Cdc, handle: Streaming, *, past: datetime) -> None:
    deadline = time.monotonic() + 60  # a safety net: heartbeats come every 0.1 s
    while (read_at := _read_at(world)) is None or read_at < past:
        assert handle.error is None, handle.error
        assert time.monotonic() < deadline, f"no caught-up heartbeat: {read_at} < {past}"
        time.sleep(0.05)


def _wait_caught_up(caplog: pytest.LogCaptureFixture, handle: Streaming) -> None:
    """Until the running stream logs a caught-up heartbeat (one that would move the moment)."""
    caplog.set_level(logging.DEBUG, logger="acme_mv.cdc.capture")
    caplog.clear()
    deadline = time.monotonic() + 60  # a safety net
    while not any("caught up with the source" in r.getMessage() for r in caplog.records):
        assert handle.error is None, handle.error
        assert time.monotonic() < deadline, "no caught-up heartbeat"
        time.sleep(0.05)
