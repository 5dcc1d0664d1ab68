"""Change capture's initial copy in parallel: the workers import the slot's exported snapshot,
so a change committed while they wait is in the stream, not in the copy, and never twice."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from acme_mv import cdc
from acme_mv.staging import parallel
from acme_mv.staging.batch import SYNC_LOCK_KEY
from tests.support.cdc_helpers import Cdc
from tests.support.database import DatabaseFactory
from tests.support.sync_helpers import (
    APPEND_TABLES,
    execute,
    fill,
    scalar,
    source_rows,
    staged_latest,
    versions,
)

COUNTS = {"customers": 20, "products": 15, "orders": 2000, "order_items": 6000}
PARTITION_INDEXES = """
SELECT p.table_name, array_agg(i.indexname::text ORDER BY i.indexname)
FROM staging.version_partitions AS p
JOIN pg_indexes AS i ON i.schemaname = 'staging' AND i.tablename = p.partition_name
WHERE %s >= p.from_batch AND %s < p.to_batch
GROUP BY 1 ORDER BY 1
"""


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "MIN_PART_BLOCKS", 1)


def test_setup_copies_in_parallel_in_the_slot_snapshot_and_streams_the_rest(
    make_db: DatabaseFactory, slot_name: str
) -> None:
    world = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    fill(world.src, **COUNTS)
    outcome: dict[str, object] = {}

    def run_setup() -> None:
        try:
            outcome["result"] = cdc.setup(
                world.settings, slot=world.slot, publication=world.publication, jobs=3
            )
        except BaseException as exc:  # pragma: no cover - reported below
            outcome["error"] = exc

    wh_db = scalar(world.wh, "SELECT current_database()")
    # hold the sync lock (a session lock: no transaction id, so the slot is still created): the
    # setup waits for it after the slot's snapshot exists and before any worker starts
    with psycopg.connect(world.wh, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (SYNC_LOCK_KEY,))
        thread = threading.Thread(target=run_setup)
        thread.start()
        deadline = time.monotonic() + 60
        while not scalar(
            world.wh,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event = 'advisory'",
            (wh_db,),
        ):
            assert time.monotonic() < deadline and thread.is_alive(), outcome
            time.sleep(0.05)
        at_slot = {t: source_rows(world.src, t) for t in APPEND_TABLES}
        execute(
            world.src,
            "UPDATE operations.order_items SET quanity = -1 WHERE order_item_id % 2 = 0; "
            "DELETE FROM operations.order_items WHERE order_item_id % 5 = 0; "
            "UPDATE operations.orders SET status = 'LATER' WHERE order_id % 4 = 0",
        )
        holder.execute("SELECT pg_advisory_unlock(%s)", (SYNC_LOCK_KEY,))
    thread.join(timeout=120)
    assert "error" not in outcome, outcome
    result = outcome["result"]
    assert isinstance(result, cdc.SetupResult) and result.batch_id == 1
    assert result.rows == COUNTS
    # copied by the workers (their index names), as of the slot's snapshot
    with psycopg.connect(world.wh) as conn:
        found: dict[str, list[str]] = dict(conn.execute(PARTITION_INDEXES, (1, 1)).fetchall())
    assert set(found) == set(APPEND_TABLES)
    for table, indexes in found.items():
        assert indexes == [f"{table}_b1_0_idx", f"{table}_b1_1_idx"]
    assert {t: staged_latest(world.wh, t) for t in APPEND_TABLES} == at_slot
    # the stream carries the writes, once
    world.catch_up()
    world.assert_staging_equals_source()
    world.assert_reports_true()
    assert set(versions(world.wh, "orders").values()) <= {1, 2}
