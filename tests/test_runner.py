"""The run loop: sync then refresh per cycle, one log line each, clean stop on signals."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

import psycopg
import pytest

from acme_mv import runner
from acme_mv.config import Settings
from acme_mv.errors import ConfigError
from acme_mv.runner import Cycle, SyncSummary
from tests.cli_runner import run
from tests.reports_oracle import assert_views_match, expected
from tests.staging_copy import copy_batch


def _copy_step(url: str) -> Callable[[], SyncSummary]:
    def step() -> SyncSummary:
        with psycopg.connect(url) as conn:
            before = conn.execute("SELECT (SELECT count(*) FROM staging.orders) + (SELECT count(*) FROM staging.order_items)").fetchone()[0]  # type: ignore[index]
        copy_batch(url, url)
        with psycopg.connect(url) as conn:
            after = conn.execute("SELECT (SELECT count(*) FROM staging.orders) + (SELECT count(*) FROM staging.order_items)").fetchone()[0]  # type: ignore[index]
        return SyncSummary(rows=int(after - before))

    return step


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10), ("500ms", 0.5), ("2m", 120), ("1h", 3600), ("3", 3), ("0.5s", 0.5)])
def test_parse_interval(text: str, seconds: float) -> None:
    assert runner.parse_interval(text) == seconds


def test_bad_interval() -> None:
    with pytest.raises(ConfigError, match="'soon'"):
        runner.parse_interval("soon")


def test_cycles_sync_and_refresh(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(database_url=db_url)
    conn = psycopg.connect(db_url, autocommit=True)
    cycles: list[Cycle] = []
    stop = threading.Event()

    def on_cycle(cycle: Cycle) -> None:
        cycles.append(cycle)
        assert_views_match(conn, expected(conn))
        if cycle.number == 3:
            stop.set()
        else:  # the source changes between cycles
            conn.execute("INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES ('2026-12-11', 1, 'PENDING')")

    with caplog.at_level(logging.INFO, logger="acme_mv"):
        n = runner.run(settings, interval=0.01, sync_step=_copy_step(db_url), stop=stop, on_cycle=on_cycle)
    conn.close()
    assert n == 3
    assert [c.rows_synced for c in cycles] == [0, 1, 1]
    assert [c.refresh.rebuilt_historic for c in cycles] == [True, False, False]
    assert all(c.freshness_seconds is not None and c.freshness_seconds >= 0 for c in cycles)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cycle ")]
    assert len(lines) == 3
    assert "synced 1 rows" in lines[1] and "refreshed current" in lines[1] and "freshness" in lines[1]


def test_once(db_url: str) -> None:
    assert runner.run(Settings(database_url=db_url), interval=60, once=True, sync_step=_copy_step(db_url)) == 1


def test_a_signal_finishes_the_step_and_stops(db_url: str) -> None:
    """SIGTERM during the sync: the sync commits, the refresh is skipped, run returns."""
    settings = Settings(database_url=db_url)
    inner = _copy_step(db_url)

    def step() -> SyncSummary:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step
        return inner()

    previous = signal.getsignal(signal.SIGTERM)
    assert runner.run(settings, interval=60, sync_step=step) == 0
    assert signal.getsignal(signal.SIGTERM) == previous  # handlers restored
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM staging.sync_batches").fetchone() == (1,)  # the sync committed
        assert conn.execute("SELECT refreshed_at FROM analytics.snapshot").fetchone() == (None,)


def test_a_signal_during_the_wait_stops_at_once(db_url: str) -> None:
    settings = Settings(database_url=db_url)
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        assert runner.run(settings, interval=3600, sync_step=_copy_step(db_url)) == 1
    finally:
        timer.cancel()


def test_cli_run_once_runs_a_real_cycle(db_url: str, cli_env: Callable[..., None]) -> None:
    cli_env(database_url=db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES ('2026-12-11', 1, 'PENDING')")
    res = run("run", "--once")
    assert res.exit_code == 0, res.stderr
    assert "cycle 1: synced 1 rows" in res.stderr
    with psycopg.connect(db_url) as conn:
        assert_views_match(conn, expected(conn))
