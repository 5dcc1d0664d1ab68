"""Syncs in child processes: SIGKILL at random moments, and two at once."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from tests.support.cli_runner import child_env
from tests.support.database import DatabaseFactory
from tests.support.sync_helpers import (
    assert_converged,
    assert_no_orphans_or_duplicates,
    execute,
    fill,
    scalar,
)

pytestmark = pytest.mark.slow


def _start(db_url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "acme_mv", "sync", *args],
        env=child_env(ACME_MV_DATABASE_URL=db_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _assert_consistent(url: str) -> None:
    assert_no_orphans_or_duplicates(url)
    assert_converged(url, url)


def _change_source(url: str, rng: random.Random) -> None:
    fill(
        url, orders=rng.randint(0, 50), order_items=rng.randint(0, 200), customers=rng.randint(0, 3)
    )
    execute(
        url,
        "UPDATE operations.orders SET status = 'R' || %s, updated_at = CURRENT_TIMESTAMP(3) "
        "WHERE order_id %% 17 = %s",
        (rng.randint(0, 9), rng.randint(0, 16)),
    )


def test_sigkill_at_random_moments_then_converge(make_db: DatabaseFactory) -> None:
    url = make_db("both")
    fill(url, customers=200, products=300, orders=2000, order_items=6000)
    rng = random.Random(20261126)
    started = time.monotonic()
    done = _start(url)
    assert done.wait(timeout=120) == 0, done.stderr.read() if done.stderr else ""
    full_run = time.monotonic() - started
    _change_source(url, rng)
    killed_mid_run = 0
    for _ in range(6):
        proc = _start(url, *rng.choice([(), ("--full",), ("--table", "orders")]))
        time.sleep(rng.uniform(0.1, full_run))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_mid_run += 1
        proc.communicate(timeout=60)
        assert_no_orphans_or_duplicates(url)  # staging may lag the source
        _change_source(url, rng)
    assert killed_mid_run >= 1  # the timing really hit running syncs
    final = _start(url)
    assert final.wait(timeout=120) == 0
    _assert_consistent(url)


@contextmanager
def _source_table_locked(url: str, table: str) -> Iterator[None]:
    """Hold ACCESS EXCLUSIVE on operations.<table>: a sync blocks when it reaches it."""
    with psycopg.connect(url) as conn:
        conn.execute(f"LOCK TABLE operations.{table} IN ACCESS EXCLUSIVE MODE")
        yield
        conn.rollback()


def _wait_for(url: str, condition: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scalar(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
            f"application_name = 'acme-mv sync' AND {condition}",
        ):
            return
        time.sleep(0.05)
    raise AssertionError(f"no sync session with {condition}")


@contextmanager
def _cursor_row_held(url: str, table: str) -> Iterator[None]:
    """An uncommitted staging.sync_state row for ``table``: a sync saving that cursor waits
    for it."""
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO staging.sync_state (table_name) VALUES (%s)", (table,))
        yield
        conn.rollback()


def test_a_killed_batch_leaves_no_rows(make_db: DatabaseFactory) -> None:
    url = make_db("both")
    fill(url, customers=10, products=10, orders=500, order_items=500)
    with _cursor_row_held(url, "order_items"):
        proc = _start(url)
        # all four tables are copied (uncommitted); saving order_items' cursor waits for the held
        # row
        _wait_for(url, "wait_event_type = 'Lock' AND wait_event = 'transactionid'")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    for table in ("orders", "order_items", "customers", "products", "sync_batches", "sync_state"):
        assert scalar(url, f"SELECT count(*) FROM staging.{table}") == 0
    # the advisory lock died with the session
    after = _start(url, "--no-wait")
    assert after.wait(timeout=60) == 0
    _assert_consistent(url)


def test_two_syncs_at_once_the_second_waits(make_db: DatabaseFactory) -> None:
    url = make_db("both")
    fill(url, orders=300, order_items=900)
    with _source_table_locked(url, "order_items"):
        first = _start(url)
        _wait_for(url, "wait_event = 'relation'")
        second = _start(url)
        _wait_for(url, "wait_event = 'advisory'")
        loser = _start(url, "--no-wait")
        _, loser_err = loser.communicate(timeout=60)
    outs = [p.communicate(timeout=60) for p in (first, second)]
    assert (first.returncode, second.returncode) == (0, 0), outs
    assert "waiting for advisory lock" in outs[1][1]
    assert loser.returncode == 3
    lines = [line for line in loser_err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Another acme-mv sync is running" in lines[0], loser_err
    assert scalar(url, "SELECT count(*) FROM staging.sync_batches") == 2
    _assert_consistent(url)
