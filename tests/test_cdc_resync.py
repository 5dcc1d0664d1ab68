"""``acme-mv cdc resync --table T``: after change capture stopped on a table and the source was
fixed, one table is re-copied in a new snapshot while the slot keeps its position; the stream
skips the table's changes from before the snapshot (the stopping transaction among them) and
applies the later ones. Real slots, real stops."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from acme_mv import cdc
from acme_mv.errors import SchemaDrift
from acme_mv.staging.batch import SYNC_LOCK_KEY
from tests.support.cdc_helpers import Cdc
from tests.support.cli_runner import run
from tests.support.database import DatabaseFactory
from tests.support.sync_helpers import execute, fill, scalar

#: a status longer than a TOAST chunk that does not compress: stored out of line
BIG_STATUS = "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 200))"


@pytest.fixture
def world(make_db: DatabaseFactory, slot_name: str, cli_env: Callable[..., None]) -> Cdc:
    w = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    cli_env(database_url=w.wh, source_url=w.src)
    fill(w.src, orders=40, order_items=80, customers=5, products=5)
    w.setup()
    w.catch_up()
    return w


def _resync(world: Cdc, table: str) -> None:
    res = run("cdc", "resync", "--table", table, "--slot", world.slot)
    assert res.exit_code == 0, res.stderr


def test_resync_after_an_update_without_replica_identity_full(world: Cdc) -> None:
    execute(world.src, "ALTER TABLE operations.orders REPLICA IDENTITY DEFAULT")
    execute(world.src, f"UPDATE operations.orders SET status = {BIG_STATUS} WHERE order_id = 1")
    world.catch_up()  # the new value itself is sent whole
    # the TOASTed status is unchanged: without the old row the source sends no value for it
    execute(
        world.src,
        "UPDATE operations.orders SET delivery_date = delivery_date + 1 WHERE order_id = 1; "
        "UPDATE operations.order_items SET quanity = quanity + 1 WHERE order_item_id <= 3",
    )
    with pytest.raises(SchemaDrift, match="acme-mv cdc resync --table orders") as caught:
        world.catch_up()
    assert "\n" not in str(caught.value) and "REPLICA IDENTITY FULL" in str(caught.value)
    with pytest.raises(SchemaDrift):  # every restart stops the same way
        world.catch_up()
    execute(world.src, "ALTER TABLE operations.orders REPLICA IDENTITY FULL")
    # before the re-copy: in its snapshot, so skipped by the stream
    execute(world.src, "UPDATE operations.orders SET status = 'BEFORE' WHERE order_id IN (2, 3)")
    execute(world.src, "DELETE FROM operations.order_items WHERE order_id = 4")
    execute(world.src, "DELETE FROM operations.orders WHERE order_id = 4")
    _resync(world, "orders")
    assert scalar(world.src, "SELECT count(*) FROM pg_replication_slots WHERE temporary") == 0
    # after it: streamed
    execute(world.src, "UPDATE operations.orders SET status = 'AFTER' WHERE order_id IN (3, 5)")
    execute(
        world.src,
        "UPDATE operations.orders SET delivery_date = delivery_date + 2 WHERE order_id = 1",
    )
    fill(world.src, orders=5, order_items=10)
    result = world.catch_up()
    assert result.resync_skipped_changes >= 4  # order 1, orders 2 and 3, order 4's delete
    world.assert_staging_equals_source()
    world.assert_reports_true()
    # the warehouse's position passed the copy: its entry is gone, later changes all apply
    assert (
        scalar(world.wh, "SELECT resync FROM staging.cdc_state WHERE slot_name = %s", (world.slot,))
        == {}
    )
    execute(world.src, "UPDATE operations.orders SET status = 'LATER' WHERE order_id = 2")
    world.catch_up()
    world.assert_staging_equals_source()


def test_resync_after_a_reverted_type_change(world: Cdc) -> None:
    execute(world.src, "ALTER TABLE operations.order_items ALTER COLUMN quanity TYPE bigint")
    execute(
        world.src,
        "UPDATE operations.order_items SET quanity = quanity + 5 WHERE order_item_id <= 10; "
        "UPDATE operations.orders SET status = 'SAME_TXN' WHERE order_id = 7",
    )
    with pytest.raises(SchemaDrift, match="acme-mv cdc resync --table order_items") as caught:
        world.catch_up()
    assert "is now bigint" in str(caught.value)
    res = run("cdc", "resync", "--table", "order_items", "--slot", world.slot)
    assert res.exit_code == 1 and "bigint" in res.stderr  # not fixed yet: refused
    execute(world.src, "ALTER TABLE operations.order_items ALTER COLUMN quanity TYPE integer")
    _resync(world, "order_items")
    execute(world.src, "UPDATE operations.order_items SET quanity = 1 WHERE order_item_id <= 2")
    world.catch_up()
    world.assert_staging_equals_source()  # orders' change in the stopping transaction applied
    world.assert_reports_true()


def test_a_running_stream_picks_up_a_resync(world: Cdc, caplog: pytest.LogCaptureFixture) -> None:
    """A resync while the stream runs: the stream's next batch sees the new entry under the
    sync lock, drops what it gathered and streams again from the warehouse's position. The
    order is made certain: a session holds the sync lock until the resync and then the
    stream's batch both wait for it (advisory locks are granted in the order asked)."""
    caplog.set_level(logging.INFO, logger="acme_mv.cdc")
    errors: list[BaseException] = []

    def resync() -> None:
        try:
            cdc.resync(world.settings, table="orders", slot=world.slot)
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    with world.streaming() as handle, psycopg.connect(world.wh) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (SYNC_LOCK_KEY,))
        thread = threading.Thread(target=resync)
        thread.start()
        _wait_for_lock_waiters(world.wh, 1)  # the resync's batch
        execute(world.src, "UPDATE operations.orders SET status = 'R0' WHERE order_id % 4 = 0")
        _wait_for_lock_waiters(world.wh, 2)  # and the stream's, gathered before the re-copy
        holder.commit()
        thread.join(60)
        assert not thread.is_alive() and not errors, errors
        assert handle.error is None
    restarts = [r for r in caplog.records if "re-copied (acme-mv cdc resync)" in r.getMessage()]
    assert restarts  # the batch gathered before the re-copy was dropped and streamed again
    world.assert_staging_equals_source()
    world.assert_reports_true()


def _wait_for_lock_waiters(url: str, n: int) -> None:
    """Until ``n`` sessions wait for the sync lock."""
    deadline = time.monotonic() + 60
    while True:
        waiting = scalar(
            url,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        if int(str(waiting)) >= n:
            return
        assert time.monotonic() < deadline, f"{waiting} sessions wait for the sync lock, not {n}"
        time.sleep(0.05)


def test_resync_refuses_an_unknown_table_and_a_missing_setup(
    make_db: DatabaseFactory, cli_env: Callable[..., None]
) -> None:
    wh = make_db("warehouse")
    cli_env(database_url=wh, source_url=make_db("source"))
    res = run("cdc", "resync", "--table", "invoices")
    assert res.exit_code == 2 and "choose from customers" in res.stderr
    res = run("cdc", "resync", "--table", "orders", "--slot", "nothing_here")
    assert res.exit_code == 1 and "acme-mv cdc setup" in res.stderr


def test_resync_after_a_delete_whose_replica_identity_lacks_the_key(world: Cdc) -> None:
    execute(
        world.src,
        "ALTER TABLE operations.order_items ADD COLUMN alt bigserial; "
        "CREATE UNIQUE INDEX order_items_alt ON operations.order_items (alt); "
        "ALTER TABLE operations.order_items REPLICA IDENTITY USING INDEX order_items_alt",
    )
    execute(world.src, "DELETE FROM operations.order_items WHERE order_item_id <= 3")
    with pytest.raises(SchemaDrift, match="without its key order_item_id") as caught:
        world.catch_up()
    assert "acme-mv cdc resync --table order_items" in str(caught.value)
    execute(world.src, "ALTER TABLE operations.order_items REPLICA IDENTITY FULL")
    _resync(world, "order_items")
    execute(world.src, "DELETE FROM operations.order_items WHERE order_item_id = 4")
    world.catch_up()
    world.assert_staging_equals_source()
    world.assert_reports_true()
