"""A source transaction larger than a batch: its changes are spilled to the warehouse in chunks
of ``batch_rows`` as they arrive and applied at its commit as one batch, so the changes held in
memory stay about ``batch_rows`` (counted: ``max_buffered_changes``), and a stream interrupted
mid-transaction leaves nothing behind and applies it whole, once, when it is sent again."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from acme_mv.cdc import capture
from acme_mv.staging.batch import SYNC_LOCK_KEY
from tests.support.cdc_helpers import Cdc
from tests.support.database import DatabaseFactory
from tests.support.sync_helpers import execute, fill, scalar

BATCH_ROWS = 200


@pytest.fixture
def world(make_db: DatabaseFactory, slot_name: str) -> Cdc:
    w = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    fill(w.src, orders=300, order_items=600, customers=20, products=20)
    w.setup()
    return w


def _spill_tables(world: Cdc) -> int:
    return int(
        scalar(
            world.wh,
            "SELECT count(*) FROM pg_class WHERE relpersistence = 't' "
            "AND relname LIKE '\\_acme\\_cdc\\_spill\\_%'",
        )
    )


def test_a_transaction_many_times_a_batch_is_applied_whole_with_a_batch_in_memory(
    world: Cdc,
) -> None:
    execute(
        world.src,
        "UPDATE operations.customers SET customer_name = customer_name || '+' "
        "WHERE customer_id % 2 = 0; "
        "UPDATE operations.orders SET status = 'BIG' WHERE order_id % 3 = 0; "
        "DELETE FROM operations.order_items WHERE order_item_id % 7 = 0; "
        "UPDATE operations.orders SET status = 'BIGGER' WHERE order_id % 6 = 0; "
        "INSERT INTO operations.order_items (order_id, product_id, quanity) "
        "SELECT 1 + g % 300, 1 + g % 20, g % 9 FROM generate_series(1, 1500) g",
    )
    fill(world.src, order_items=50)  # a small transaction after it
    result = world.catch_up(batch_rows=BATCH_ROWS)
    assert result.changes >= 1700
    assert result.spilled_chunks >= 1700 // BATCH_ROWS - 1
    # the memory held a batch's worth (an update of a key adds two changes, a message at most)
    assert result.max_buffered_changes <= BATCH_ROWS + 4, result
    world.assert_staging_equals_source()
    world.assert_reports_true()


def test_truncate_inside_a_spilled_transaction(world: Cdc) -> None:
    execute(
        world.src,
        "UPDATE operations.order_items SET quanity = quanity + 1; "
        "UPDATE operations.products SET product_name = product_name || '!'; "
        "TRUNCATE operations.order_items; "
        "INSERT INTO operations.order_items (order_id, product_id, quanity) "
        "SELECT 1 + g % 300, 1 + g % 20, 1 FROM generate_series(1, 450) g; "
        "UPDATE operations.order_items SET quanity = 5 WHERE order_item_id % 40 = 0",
    )
    result = world.catch_up(batch_rows=BATCH_ROWS)
    assert result.spilled_chunks >= 3 and result.max_buffered_changes <= BATCH_ROWS + 4
    world.assert_staging_equals_source()
    world.assert_reports_true()


def test_a_stream_interrupted_mid_transaction_applies_it_once(world: Cdc) -> None:
    """The walsender is ended while the transaction's chunks are being spilled: the new
    session drops the spill and the transaction, sent again, lands whole and once."""
    execute(world.src, "UPDATE operations.orders SET status = 'V1'")  # one version per key
    world.catch_up()
    seen: list[int] = []

    def interrupt() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _spill_tables(world):
            time.sleep(0.005)
        seen.append(_spill_tables(world))
        execute(
            world.src,
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (world.slot,),
        )

    killer = threading.Thread(target=interrupt)
    with world.streaming(batch_rows=50) as handle:
        killer.start()
        execute(
            world.src,
            "UPDATE operations.order_items SET quanity = quanity + 1; "
            "UPDATE operations.orders SET status = 'V2'; "
            "UPDATE operations.order_items SET quanity = quanity + 1; "
            "UPDATE operations.orders SET status = 'V3' WHERE order_id % 2 = 0",
        )
        killer.join(90)
    assert seen and seen[0] > 0, "the spill was never seen"
    assert handle.result is not None and handle.result.reconnects >= 1
    world.assert_staging_equals_source()
    world.assert_reports_true()
    # each order got exactly one version for the transaction: nothing doubled, nothing torn
    assert (
        scalar(
            world.wh,
            "SELECT count(*) FROM staging.orders WHERE status IN ('V2', 'V3')",
        )
        == 300
    )


def test_a_long_apply_keeps_the_walsender_alive(
    make_db: DatabaseFactory, slot_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose apply outlasts the source's wal_sender_timeout (a spilled transaction of
    millions of changes takes minutes) keeps the replication connection: the stream sends
    status updates while it applies, so the walsender does not end it and the transaction is
    not sent again."""
    # wal_sender_timeout may be set per connection (PostgreSQL 12+): 1 s for this source's
    src = make_conninfo(make_db("source"), options="-c wal_sender_timeout=1000")
    world = Cdc(src=src, wh=make_db("warehouse"), slot=slot_name)
    fill(world.src, orders=5, order_items=10, customers=2, products=2)
    world.setup()
    monkeypatch.setattr(capture, "KEEPALIVE_S", 0.2)
    with psycopg.connect(world.wh) as holder, world.streaming() as handle:
        # the next batch's apply waits for the sync lock for 4 s: four timeouts' worth
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (SYNC_LOCK_KEY,))
        execute(world.src, "UPDATE operations.orders SET status = 'PROCESSING'")
        time.sleep(4)
        holder.commit()
        assert handle.error is None
    assert handle.result is not None
    assert handle.result.reconnects == 0
    world.assert_staging_equals_source()
