"""The run loop: sync then refresh per cycle, one log line each, clean stop on signals."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from acme_mv.config import Settings, parse_duration
from acme_mv.errors import (
    AuthenticationFailed,
    BadArgument,
    ConfigError,
    ConnectionFailed,
    ConnectionLost,
    NotMigrated,
    PermissionDenied,
    RefreshFailed,
    SchemaDrift,
)
from acme_mv.run import loop as runner
from acme_mv.run.loop import Cycle, SyncSummary
from tests.support.cli_runner import run
from tests.support.reports_oracle import assert_views_match, expected
from tests.support.staging_copy import copy_batch


def _copy_step(url: str) -> Callable[[bool], SyncSummary]:
    def step(full: bool = False) -> SyncSummary:
        with psycopg.connect(url) as conn:
            before = conn.execute(
                "SELECT (SELECT count(*) FROM staging.orders) + (SELECT count(*) "
                "FROM staging.order_items)"
            ).fetchone()[0]  # type: ignore[index]
        copy_batch(url, url, full=full)
        with psycopg.connect(url) as conn:
            after = conn.execute(
                "SELECT (SELECT count(*) FROM staging.orders) + (SELECT count(*) "
                "FROM staging.order_items)"
            ).fetchone()[0]  # type: ignore[index]
        return SyncSummary(rows=int(after - before))

    return step


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("10s", 10, id="seconds"),
        pytest.param("500ms", 0.5, id="milliseconds"),
        pytest.param("2m", 120, id="minutes"),
        pytest.param("1h", 3600, id="hours"),
        pytest.param("2h", 7200, id="two_hours"),
        pytest.param("1d", 86400, id="day"),
        pytest.param("1m30s", 90, id="minutes_and_seconds"),
        pytest.param("1h 30m", 5400, id="spaced_compound"),
        pytest.param("1d2h3m4s5ms", 93784.005, id="every_unit_in_order"),
        pytest.param("3", 3, id="plain_seconds"),
        pytest.param("0.5s", 0.5, id="fractional_seconds"),
        pytest.param(" 10 S ", 10, id="padded_upper_case"),
        pytest.param("2M", 120, id="upper_case_minutes"),
        pytest.param("500MS", 0.5, id="upper_case_milliseconds"),
        pytest.param("500 ms", 0.5, id="space_before_unit"),
        pytest.param("2.5", 2.5, id="plain_fractional_seconds"),
        pytest.param("1.5h", 5400, id="fractional_hours"),
        pytest.param("0", 0, id="zero"),
        pytest.param("0s", 0, id="zero_seconds"),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("soon", id="word"),
        pytest.param("", id="empty"),
        pytest.param("-1s", id="negative"),
        pytest.param("10x", id="unknown_unit"),
        pytest.param("30s1m", id="units_out_of_order"),
        pytest.param("1s1s", id="unit_twice"),
        pytest.param("1 week", id="week"),
        pytest.param("inf", id="infinity"),
        pytest.param("nan", id="not_a_number"),
        pytest.param("m", id="unit_without_number"),
        pytest.param("5 minutes", id="unit_spelt_out"),
        pytest.param("1e3", id="exponent"),
        pytest.param("1_000", id="digit_separator"),
        pytest.param("+5", id="plus_sign"),
        pytest.param(".5", id="no_integer_part"),
        pytest.param("5.", id="no_fraction_digits"),
        pytest.param("1m 1m", id="unit_twice_spaced"),
        pytest.param("1h,30m", id="comma"),
        pytest.param("   ", id="blank"),
    ],
)
def test_bad_duration_is_a_usage_error_quoting_the_text(text: str) -> None:
    with pytest.raises(BadArgument) as info:
        parse_duration(text)
    assert repr(text) in str(info.value)
    assert info.value.exit_code == 2


T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("last_full", "first_batch", "now", "due"),
    [
        pytest.param(None, None, T0, False, id="nothing_synced_yet"),
        pytest.param(
            None, T0, T0 + timedelta(hours=23), False, id="initial_copy_younger_than_a_day"
        ),
        pytest.param(None, T0, T0 + timedelta(days=1), True, id="initial_copy_a_day_old"),
        pytest.param(
            T0,
            T0 - timedelta(days=9),
            T0 + timedelta(hours=1),
            False,
            id="recent_full_wins_over_old_first",
        ),
        pytest.param(T0, T0, T0 + timedelta(days=2), True, id="full_two_days_old"),
    ],
)
def test_full_sync_due(
    last_full: datetime | None, first_batch: datetime | None, now: datetime, due: bool
) -> None:
    assert (
        runner.full_sync_due(
            last_full=last_full, first_batch=first_batch, now=now, every=timedelta(days=1)
        )
        is due
    )


@pytest.mark.parametrize(
    ("exc", "transient", "server"),
    [
        pytest.param(ConnectionLost("x", role="source"), True, "source", id="lost_source"),
        pytest.param(
            ConnectionFailed("x", role="warehouse"), True, "warehouse", id="refused_warehouse"
        ),
        pytest.param(AuthenticationFailed("x", role="source"), False, "source", id="bad_password"),
        pytest.param(
            PermissionDenied("x", role="source", privilege="SELECT", object="t"),
            False,
            "source",
            id="grant_missing",
        ),
        pytest.param(
            NotMigrated("x", current=None, head="0005_delivery"),
            False,
            "unknown",
            id="not_migrated",
        ),
        pytest.param(
            SchemaDrift("x", table="operations.orders"), False, "unknown", id="schema_drift"
        ),
        pytest.param(ConfigError("x"), False, "unknown", id="bad_config"),
        pytest.param(
            psycopg.OperationalError("x"), True, "unknown", id="unclaimed_operational_error"
        ),
        pytest.param(
            psycopg.DatabaseError("server closed the connection unexpectedly"),
            True,
            "unknown",
            id="unclaimed_cut",
        ),
        pytest.param(psycopg.errors.DivisionByZero("x"), False, "unknown", id="sql_error"),
        pytest.param(
            psycopg.errors.ProgramLimitExceeded("index row size 2816 exceeds btree maximum"),
            False,
            "unknown",
            id="index_entry_too_large",
        ),
        pytest.param(
            RefreshFailed("x", table="analytics.t_current", key=("k",)),
            False,
            "unknown",
            id="refresh_failed_on_the_data",
        ),
        pytest.param(ValueError("x"), False, "unknown", id="a_bug"),
    ],
)
def test_what_is_retried(exc: BaseException, transient: bool, server: str) -> None:
    assert runner.is_transient(exc) is transient
    assert runner.server_of(exc) == server


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
            conn.execute(
                "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
                "('2026-12-11', 1, 'PENDING')"
            )

    with caplog.at_level(logging.INFO, logger="acme_mv"):
        n = runner.run(
            settings, interval=0.01, sync_step=_copy_step(db_url), stop=stop, on_cycle=on_cycle
        )
    conn.close()
    assert n == 3
    assert [c.rows_synced for c in cycles] == [0, 1, 1]
    assert [c.refresh.rebuilt_historic for c in cycles] == [True, False, False]
    assert all(c.freshness_seconds is not None and c.freshness_seconds >= 0 for c in cycles)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cycle ")]
    assert len(lines) == 3
    assert (
        "synced 1 rows" in lines[1] and "refreshed current" in lines[1] and "freshness" in lines[1]
    )


def test_once(db_url: str) -> None:
    assert (
        runner.run(
            Settings(database_url=db_url), interval=60, once=True, sync_step=_copy_step(db_url)
        )
        == 1
    )


def test_a_signal_finishes_the_step_and_stops(db_url: str) -> None:
    """SIGTERM during the sync: the sync commits, the refresh is skipped, run returns."""
    settings = Settings(database_url=db_url)
    inner = _copy_step(db_url)

    def step(full: bool) -> SyncSummary:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step
        return inner(full)

    previous = signal.getsignal(signal.SIGTERM)
    assert runner.run(settings, interval=60, sync_step=step) == 0
    assert signal.getsignal(signal.SIGTERM) == previous  # handlers restored
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM staging.sync_batches").fetchone() == (
            1,
        )  # the sync committed
        assert conn.execute("SELECT refreshed_at FROM analytics.snapshot").fetchone() == (None,)


def test_a_signal_during_the_wait_stops_at_once(db_url: str) -> None:
    """SIGINT once the first cycle is done: the hour's wait ends at once, one cycle counted."""
    settings = Settings(database_url=db_url)
    timers: list[threading.Timer] = []

    def after_cycle(_cycle: object) -> None:
        # armed when the cycle ends (not at a fixed time from the start, which a slow first
        # cycle on a loaded machine outlasted); it fires during the wait that follows
        timers.append(threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)))
        timers[-1].start()

    try:
        assert (
            runner.run(settings, interval=3600, sync_step=_copy_step(db_url), on_cycle=after_cycle)
            == 1
        )
    finally:
        for timer in timers:
            timer.cancel()


def test_cli_run_once_runs_a_real_cycle(db_url: str, cli_env: Callable[..., None]) -> None:
    cli_env(database_url=db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
            "('2026-12-11', 1, 'PENDING')"
        )
    res = run("run", "--once")
    assert res.exit_code == 0, res.stderr
    assert "cycle 1: synced 1 rows" in res.stderr
    with psycopg.connect(db_url) as conn:
        assert_views_match(conn, expected(conn))


def _flaky(
    inner: Callable[[bool], SyncSummary], errors: list[BaseException]
) -> Callable[[bool], SyncSummary]:
    """The real copy step, after raising each of ``errors`` once (a server failing, then back)."""

    def step(full: bool) -> SyncSummary:
        if errors:
            raise errors.pop(0)
        return inner(full)

    return step


FAST = runner.RetryPolicy(first_s=0.01, max_s=0.04)


def test_failed_cycles_are_retried_one_line_each_naming_the_server(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException] = [
        ConnectionFailed("Cannot connect to the source (x on h:1): refused", role="source"),
        ConnectionLost(
            "The warehouse (w on h:2) failed: terminating connection\ndue to administrator command",
            role="warehouse",
        ),
        psycopg.OperationalError("consuming input failed"),
    ]
    cycles: list[Cycle] = []
    with caplog.at_level(logging.INFO, logger="acme_mv"):
        n = runner.run(
            Settings(database_url=db_url),
            interval=60,
            once=True,
            retry=FAST,
            sync_step=_flaky(_copy_step(db_url), errors),
            on_cycle=cycles.append,
        )
    assert n == 1
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(" failed")[0] for r in failures] == [
        "cycle 1",
        "cycle 2",
        "cycle 3",
    ]
    assert [getattr(r, "server", None) for r in failures] == ["source", "warehouse", "unknown"]
    assert all("\n" not in r.getMessage() for r in failures)
    assert "(source)" in failures[0].getMessage() and "(warehouse)" in failures[1].getMessage()
    assert cycles[0].number == 4 and cycles[0].failures_before == 3
    with psycopg.connect(db_url) as conn:
        assert_views_match(conn, expected(conn))


def test_what_retrying_cannot_fix_ends_the_loop_at_once(db_url: str) -> None:
    errors: list[BaseException] = [
        AuthenticationFailed("password authentication failed", role="source")
    ]
    with pytest.raises(AuthenticationFailed):
        runner.run(
            Settings(database_url=db_url),
            interval=60,
            retry=FAST,
            sync_step=_flaky(_copy_step(db_url), errors),
        )


def test_max_failures_gives_up_with_the_last_error(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException] = [ConnectionLost(f"lost {i}", role="source") for i in range(5)]
    policy = runner.RetryPolicy(first_s=0.01, max_s=0.01, max_failures=3)
    with (
        caplog.at_level(logging.INFO, logger="acme_mv"),
        pytest.raises(ConnectionLost, match="lost 2"),
    ):
        runner.run(
            Settings(database_url=db_url),
            interval=60,
            retry=policy,
            sync_step=_flaky(_copy_step(db_url), errors),
        )
    assert len(errors) == 2  # three attempts, no fourth
    assert any("giving up after 3 failures" in r.getMessage() for r in caplog.records)


def test_a_stop_during_the_backoff_ends_the_loop_cleanly(db_url: str) -> None:
    stop = threading.Event()
    errors: list[BaseException] = [ConnectionLost("lost", role="source") for _ in range(100)]
    policy = runner.RetryPolicy(first_s=3600, max_s=3600)  # would wait an hour
    attempted = threading.Event()
    flaky = _flaky(_copy_step(db_url), errors)

    def step(full: bool) -> SyncSummary:
        attempted.set()
        return flaky(full)

    def stop_after_the_first_attempt() -> None:
        if attempted.wait(60):
            time.sleep(0.3)  # then it waits the hour; a slower box only moves the stop earlier
            stop.set()  # in the step or in the wait: either way no second attempt

    stopper = threading.Thread(target=stop_after_the_first_attempt)
    stopper.start()
    try:
        assert (
            runner.run(
                Settings(database_url=db_url),
                interval=60,
                retry=policy,
                stop=stop,
                sync_step=step,
            )
            == 0
        )
    finally:
        attempted.set()
        stopper.join()
    assert len(errors) == 99  # one attempt, then the wait was cut short


def test_full_every_recopies_when_the_last_full_copy_is_old_enough(db_url: str) -> None:
    """The real sync: the first cycle is the initial copy; with --full-every 0 the next one
    is full."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
            "('2026-12-11', 1, 'PENDING')"
        )
    stop = threading.Event()
    cycles: list[Cycle] = []

    def on_cycle(cycle: Cycle) -> None:
        cycles.append(cycle)
        if len(cycles) == 2:
            stop.set()

    runner.run(
        Settings(database_url=db_url), interval=0.01, stop=stop, full_every=0, on_cycle=on_cycle
    )
    assert [c.full for c in cycles] == [False, True]
    with psycopg.connect(db_url) as conn:
        full = conn.execute(
            "SELECT compared_tables FROM staging.sync_batches ORDER BY batch_id"
        ).fetchall()
        # the second batch compared every row with the source (sync --full); nothing was re-copied
        # from scratch, so the refresh adds its deltas and needs no historic rebuild
        assert full[0] == ([],) and "orders" in full[1][0]
        assert not cycles[1].refresh.rebuilt_historic
        assert_views_match(conn, expected(conn))


def test_full_every_leaves_a_recent_full_copy_alone(db_url: str) -> None:
    cycles: list[Cycle] = []
    runner.run(
        Settings(database_url=db_url),
        interval=0.01,
        once=True,
        full_every=86400,
        on_cycle=cycles.append,
    )
    runner.run(
        Settings(database_url=db_url),
        interval=0.01,
        once=True,
        full_every=86400,
        on_cycle=cycles.append,
    )
    assert [c.full for c in cycles] == [False, False]
    with psycopg.connect(db_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM staging.sync_batches WHERE compared_tables <> '{}'"
        ).fetchone() == (0,)


def test_the_stop_flag_seen_as_an_event_waits_its_timeout() -> None:
    """The view the stream and tenacity get of the stop flag: ``wait`` lasts its timeout (a
    reconnect's pause, a busy slot's backoff) unless a stop comes first."""
    event = threading.Event()
    view = runner._EventView(runner._StopFlag(event))
    started = time.monotonic()
    assert view.wait(0.5) is False
    assert time.monotonic() - started >= 0.45
    threading.Timer(0.2, event.set).start()
    started = time.monotonic()
    assert view.wait(30) is True
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("failures", "wait_s"),
    [
        pytest.param(1, 1.0, id="first_failure_first_s"),
        pytest.param(2, 2.0, id="second_doubles"),
        pytest.param(5, 16.0, id="fifth"),
        pytest.param(7, 60.0, id="capped"),
        pytest.param(10_000, 60.0, id="far_past_the_cap"),
    ],
)
def test_backoff_follows_the_failures_in_a_row(failures: int, wait_s: float) -> None:
    assert runner.backoff_s(runner.RetryPolicy(), failures) == wait_s
