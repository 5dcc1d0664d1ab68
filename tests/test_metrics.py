"""``acme-mv run --metrics-port``: a real run loop in a subprocess, scraped over HTTP on
127.0.0.1."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli_runner import child_env

#: upper bound of a wait for the loop to move; never reached when it works
PATIENCE_S = 120

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def wait_until(port: int, test: Callable[[Samples], bool], what: str) -> Samples:
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        samples = scrape(port)
        if test(samples):
            return samples
        time.sleep(0.2)
    raise AssertionError(f"metrics never showed {what}: {scrape(port)}")


@pytest.fixture
def running(db_url: str) -> Iterator[int]:
    """`acme-mv run --metrics-port 0` (the OS picks a free port; the log line says which)."""
    env = child_env(ACME_MV_DATABASE_URL=db_url)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "acme_mv",
            "run",
            "--interval",
            "200ms",
            "--max-backoff",
            "500ms",
            "--metrics-port",
            "0",
            "--metrics-host",
            "127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    port = None
    for line in proc.stderr:
        m = re.search(r"serving Prometheus metrics on http://127\.0\.0\.1:(\d+)/metrics", line)
        if m:
            port = int(m[1])
            break
    assert port, "no metrics line"
    try:
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        proc.stderr.close()


def test_metrics_move_with_cycles_and_failures(db_url: str, running: int) -> None:
    port = running
    first = wait_until(port, lambda s: value(s, "acme_mv_cycles_total") >= 1, "a cycle")
    assert value(first, "acme_mv_up") == 1
    assert value(first, "acme_mv_last_success_timestamp_seconds") > 0
    assert not math.isnan(value(first, "acme_mv_freshness_seconds"))
    assert (
        value(first, "acme_mv_sync_seconds_count") >= 1
        and value(first, "acme_mv_refresh_seconds_count") >= 1
    )
    assert value(first, "acme_mv_failed_cycles_total", server="warehouse") == 0
    base_rows = value(first, "acme_mv_rows_synced_total")

    with psycopg.connect(db_url, autocommit=True) as conn:
        for _ in range(5):
            conn.execute(
                "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
                "('2026-12-11', 1, 'PENDING')"
            )
    moved = wait_until(
        port, lambda s: value(s, "acme_mv_rows_synced_total") >= base_rows + 5, "5 more rows"
    )
    assert value(moved, "acme_mv_rows_synced_total") == base_rows + 5
    assert value(moved, "acme_mv_cycles_total") > value(first, "acme_mv_cycles_total")

    # logins refused on this test's database (warehouse and source are one database here, so
    # either connection may be the one refused): cycles fail, up drops to 0
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    admin_url = psycopg.conninfo.make_conninfo(db_url, dbname="postgres")
    with psycopg.connect(admin_url, autocommit=True) as adm:
        adm.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        try:
            down = wait_until(port, lambda s: failures(s) >= 1, "a failure")
            assert value(down, "acme_mv_up") == 0
        finally:
            adm.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
    back = wait_until(port, lambda s: value(s, "acme_mv_up") == 1, "recovery")
    assert failures(back) >= failures(down) >= 1
    assert (
        value(back, "acme_mv_failed_cycles_total", server="unknown") == 0
    )  # each failure named its server
    assert value(back, "acme_mv_cycles_total") > value(moved, "acme_mv_cycles_total")


def failures(samples: Samples) -> float:
    return sum(
        value(samples, "acme_mv_failed_cycles_total", server=s) for s in ("warehouse", "source")
    )
