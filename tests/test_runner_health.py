"""``acme-mv status`` shows the reports' freshness; ``--max-age`` is a health check (exit 5 when
stale)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

import psycopg

from acme_mv.config import Settings
from acme_mv.errors import Stale
from acme_mv.run import health
from tests.support.cli_runner import run
from tests.support.sync_helpers import execute


def test_never_refreshed_is_stale(db_url: str, cli_env: Callable[..., None]) -> None:
    cli_env(database_url=db_url)
    res = run("status", "--max-age", "1d")
    assert res.exit_code == Stale.exit_code == 5
    assert "reports never refreshed" in res.stdout
    assert "stale" in res.stderr and len(res.stderr.splitlines()) == 1


def test_fresh_reports_pass_and_old_ones_fail(db_url: str, cli_env: Callable[..., None]) -> None:
    cli_env(database_url=db_url)
    assert run("run", "--once").exit_code == 0
    res = run("status", "--max-age", "1h")
    assert res.exit_code == 0, res.stderr
    assert "reports refreshed at" in res.stdout and "freshness" in res.stdout
    fresh = health.freshness(Settings(database_url=db_url))
    assert fresh.age_s is not None and fresh.refreshed_batch_id == 1
    # the batch the reports hold read the source two hours ago (as if `run` had stopped then)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE staging.sync_batches SET started_at = started_at - interval '2 hours'")
    old = health.freshness(Settings(database_url=db_url))
    assert old.age_s is not None and old.age_s >= 7200
    assert run("status", "--max-age", "3h").exit_code == 0
    res = run("status", "--max-age", "1h30m")
    assert res.exit_code == 5
    assert "limit is 5400s" in res.stderr
    assert run("status", "--json", "--max-age", "1h").exit_code == 5  # the JSON mode checks too


def test_require_fresh_is_pure() -> None:
    never = health.Freshness(refreshed_at=None, refreshed_batch_id=None, read_at=None, age_s=None)
    assert never.is_stale(10**9)
    from datetime import UTC, datetime

    now = datetime(2026, 11, 26, tzinfo=UTC)
    recent = health.Freshness(refreshed_at=now, refreshed_batch_id=3, read_at=now, age_s=12.0)
    assert not recent.is_stale(12.0) and recent.is_stale(11.9)
    health.require_fresh(recent, 60)


def _read_at(db_url: str) -> datetime:
    fresh = health.freshness(Settings(database_url=db_url))
    assert fresh.read_at is not None and fresh.age_s is not None
    return fresh.read_at


def test_a_batchs_moment_of_the_source_is_its_freshness(
    db_url: str, cli_env: Callable[..., None]
) -> None:
    """A cursor sync's batch is as fresh as its start; a change-capture batch as its
    ``source_at`` (its last commit, or a caught-up heartbeat's moment), so a lagging stream
    shows its lag."""
    cli_env(database_url=db_url)
    assert run("run", "--once").exit_code == 0  # batch 1, refreshed
    with psycopg.connect(db_url, autocommit=True) as conn:
        started = conn.execute("SELECT started_at FROM staging.sync_batches").fetchone()
    assert started is not None
    assert _read_at(db_url) == started[0]
    # the same batch as change capture applied it, an hour after its last commit
    execute(db_url, "UPDATE staging.sync_batches SET source_at = started_at - interval '1 hour'")
    assert _read_at(db_url) == started[0] - timedelta(hours=1)
    assert run("status", "--max-age", "30m").exit_code == 5


def test_metrics_take_a_caught_up_heartbeat_never_an_older_moment() -> None:
    from acme_mv.run.metrics import Metrics

    metrics = Metrics()
    metrics.caught_up(1000.0)
    metrics.caught_up(900.0)
    before = time.time()
    age = metrics.registry.get_sample_value("acme_mv_freshness_seconds")
    assert age is not None and before - 1000.0 <= age <= time.time() - 1000.0
