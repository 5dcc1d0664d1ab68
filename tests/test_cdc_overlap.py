"""While the warehouse applies a batch, the stream reads and decodes the next ones (one closed
batch waits, one fills; then it waits too), and nothing is confirmed to the source before the
warehouse committed it. Counted: transactions decoded while a batch's apply is held on the
sync lock."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest

from acme_mv.cdc import capture
from acme_mv.cdc.decode import Decoder
from acme_mv.cdc.pgoutput import lsn_from_str
from acme_mv.cdc.write import Transaction
from acme_mv.staging.batch import SYNC_LOCK_KEY
from tests.support.cdc_helpers import Cdc
from tests.support.database import DatabaseFactory
from tests.support.sync_helpers import execute, fill, scalar

BATCH_ROWS = 50
#: single-row transactions committed while the first batch's apply is held
LATER = 4 * BATCH_ROWS
#: a safety net only (the old, sequential stream never decodes past the held batch)
WAIT_S = 60


def _wait_until(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_the_stream_decodes_ahead_while_a_batch_waits_for_the_warehouse(
    make_db: DatabaseFactory, slot_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    fill(world.src, orders=LATER, order_items=5, customers=5, products=5)
    world.setup()
    decoded: list[int] = []  # changes of each transaction the stream decoded, in order
    ends: list[int] = []  # and each one's end in the WAL

    class Counting(Decoder):
        def feed(self, payload: bytes) -> Transaction | None:
            done = super().feed(payload)
            if done is not None:
                decoded.append(len(done.changes))
                ends.append(done.end_lsn)
            return done

    monkeypatch.setattr(capture, "Decoder", Counting)
    # the holder inside the stream: a failed check releases the lock before the stream stops
    with (
        world.streaming(batch_rows=BATCH_ROWS, refresh_views=False) as handle,
        psycopg.connect(world.wh) as holder,
    ):
        # the next batch's apply waits for the sync lock until the end of the test
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (SYNC_LOCK_KEY,))
        execute(world.src, "UPDATE operations.orders SET status = 'HELD' WHERE order_id <= 10")
        _wait_until("the held transaction was decoded", lambda: bool(decoded))
        held = len(decoded)
        held_end = ends[held - 1]
        saved = world.saved_lsn()
        with psycopg.connect(world.src, autocommit=True) as src:
            for order_id in range(1, LATER + 1):
                src.execute(
                    "UPDATE operations.orders SET status = 'LATER' WHERE order_id = %s",
                    (order_id,),
                )
        # the stream decodes a closed batch and a full one while the held one is not committed
        # (a batch closes when it and the open transaction hold BATCH_ROWS changes: 49 here)
        _wait_until(
            "the stream decoded two batches past the held one",
            lambda: sum(decoded[held:]) >= 2 * (BATCH_ROWS - 1),
        )
        assert handle.error is None
        # ... and then waits: at most the held batch, one closed, one filled
        assert sum(decoded[held:]) <= 2 * BATCH_ROWS
        assert world.saved_lsn() == saved
        assert scalar(world.wh, "SELECT count(*) FROM staging.orders WHERE status = 'HELD'") == 0
        confirmed = scalar(
            world.src,
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (world.slot,),
        )
        # neither the held transaction nor any after it is confirmed: the warehouse's position
        # did not move
        assert lsn_from_str(str(confirmed)) < held_end
        holder.commit()
    assert handle.result is not None and handle.result.reconnects == 0
    world.assert_staging_equals_source()
    # each transaction applied once: one version of each
    assert scalar(world.wh, "SELECT count(*) FROM staging.orders WHERE status = 'HELD'") == 10
    assert scalar(world.wh, "SELECT count(*) FROM staging.orders WHERE status = 'LATER'") == LATER
