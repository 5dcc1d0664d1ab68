"""The whole pipeline racing the source's real writers.

Two live-workload simulators write the source (each row change its own
transaction, items one by one, status moves) while sync and refresh cycle,
with a `--full` re-copy and day rollovers mixed in. When the writers stop, one
more sync and refresh make staging equal the source and every report equal
its from-scratch computation: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from acme_mv.config import Settings
from acme_mv.reports.refresh import refresh
from acme_mv.sample import load, simulate
from acme_mv.sync import sync
from tests.support.reports_oracle import assert_views_match, expected
from tests.support.sync_helpers import assert_converged, versions

#: only the open-transaction watermark protects the writers' late commits here
pytestmark = pytest.mark.usefixtures("no_safety_margin")


def test_sync_and_refresh_racing_live_writers(source_url: str, warehouse_url: str) -> None:
    with psycopg.connect(source_url) as conn:
        load.load(conn, orders=400, seed=3, mode="replace")
    settings = Settings(database_url=warehouse_url, source_url=source_url)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        try:
            simulate.simulate(source_url, rate=150, duration=None, seed=seed, stop=stop)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    now = datetime.now(UTC)
    deadline = time.monotonic() + 4
    cycle = 0
    try:
        while cycle < 8 or time.monotonic() < deadline:
            sync(settings, full=(cycle == 4))
            if cycle % 5 == 2:
                now += timedelta(days=1)  # a day rollover while the writers write
            refresh(settings, mode="current" if cycle % 3 == 1 else "auto", now=now)
            cycle += 1
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors
    sync(settings)
    refresh(settings, now=now)
    assert_converged(source_url, warehouse_url)
    for table in ("orders", "order_items"):
        assert versions(warehouse_url, table), f"staging.{table} is empty"
    with psycopg.connect(source_url) as src, psycopg.connect(warehouse_url) as wh:
        changed = src.execute(
            "SELECT count(*) FROM operations.orders WHERE order_date = current_date"
        ).fetchone()
        assert changed is not None and changed[0] > 0, (
            "the writers wrote nothing: the test proves nothing"
        )
        assert_views_match(wh, expected(src))
