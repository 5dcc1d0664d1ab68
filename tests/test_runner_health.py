"""``acme-mv status`` shows the reports' freshness; ``--max-age`` is a health check (exit 5 when
stale)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from acme_mv.config import Settings
from acme_mv.errors import Stale
from acme_mv.run import health
from tests.support.cli_runner import run


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
