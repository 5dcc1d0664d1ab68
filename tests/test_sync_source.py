"""The cursor rules of acme_mv.sync.source as pure functions (no database), one id per case,
the way dlt tests ``apply_lag``; one database test checks that the SQL read applies the same
rule."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from acme_mv.staging.tables import TABLES
from acme_mv.sync import source
from acme_mv.sync.source import SAFETY_MARGIN, next_cursor, picks

T = dt.datetime(2026, 11, 26, 12, 0, 0)
MINUTE = dt.timedelta(minutes=1)
LAG = dt.timedelta(minutes=5)
MS = dt.timedelta(milliseconds=1)
US = dt.timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("clock", "oldest_xact", "sees_all", "expected"),
    [
        pytest.param(T, None, True, T - SAFETY_MARGIN, id="idle_source_clock_minus_margin"),
        pytest.param(
            T, T - MINUTE, True, T - MINUTE - SAFETY_MARGIN,
            id="open_transaction_holds_back",
        ),
        pytest.param(
            T, T + MINUTE, True, T - SAFETY_MARGIN,
            id="transaction_started_after_clock_ignored",
        ),
        pytest.param(T, T, True, T - SAFETY_MARGIN, id="transaction_started_at_clock"),
        pytest.param(
            T, None, False, T - LAG - SAFETY_MARGIN,
            id="hidden_sessions_fall_back_to_lag",
        ),
        pytest.param(
            T, T - MINUTE, False, T - LAG - SAFETY_MARGIN,
            id="hidden_lag_longer_than_open_transaction",
        ),
        pytest.param(
            T, T - 2 * LAG, False, T - 2 * LAG - SAFETY_MARGIN,
            id="hidden_open_transaction_older_than_lag",
        ),
        pytest.param(
            T + 1500 * US, None, True, T - SAFETY_MARGIN + MS,
            id="truncated_to_the_millisecond",
        ),
        pytest.param(T + 999 * US, None, True, T - SAFETY_MARGIN, id="truncated_never_rounded_up"),
        pytest.param(
            T, T - MINUTE + 2345 * US, True, T - MINUTE - SAFETY_MARGIN + 2 * MS,
            id="oldest_xact_truncated",
        ),
    ],
)  # fmt: skip
def test_next_cursor(
    clock: dt.datetime, oldest_xact: dt.datetime | None, sees_all: bool, expected: dt.datetime
) -> None:
    assert (
        next_cursor(clock=clock, oldest_xact=oldest_xact, sees_all=sees_all, fallback_lag=LAG)
        == expected
    )


@pytest.mark.parametrize(
    ("margin", "sees_all", "lag", "expected"),
    [
        pytest.param(dt.timedelta(0), True, LAG, T, id="no_margin_sees_all"),
        pytest.param(
            dt.timedelta(seconds=10), True, LAG, T - dt.timedelta(seconds=10),
            id="wider_margin",
        ),
        pytest.param(dt.timedelta(0), False, dt.timedelta(0), T, id="hidden_zero_lag_is_the_clock"),
        pytest.param(dt.timedelta(0), False, LAG, T - LAG, id="hidden_no_margin"),
    ],
)  # fmt: skip
def test_next_cursor_margin_and_lag(
    margin: dt.timedelta, sees_all: bool, lag: dt.timedelta, expected: dt.datetime
) -> None:
    cursor = next_cursor(
        clock=T, oldest_xact=None, sees_all=sees_all, fallback_lag=lag, margin=margin
    )
    assert cursor == expected


def test_next_cursor_never_passes_the_clock_or_an_open_transaction() -> None:
    for oldest in (None, T - LAG, T - MS, T, T + MS):
        for sees_all in (True, False):
            cursor = next_cursor(clock=T, oldest_xact=oldest, sees_all=sees_all, fallback_lag=LAG)
            assert cursor <= T - SAFETY_MARGIN
            if oldest is not None:
                assert cursor <= oldest - SAFETY_MARGIN
            assert cursor.microsecond % 1000 == 0


SINCE = T - MINUTE


@pytest.mark.parametrize(
    ("updated_at", "since", "expected"),
    [
        pytest.param(T, None, True, id="no_cursor_reads_everything"),
        pytest.param(None, None, True, id="no_cursor_reads_null"),
        pytest.param(SINCE + MS, SINCE, True, id="after_the_cursor"),
        pytest.param(SINCE, SINCE, True, id="at_the_cursor_boundary_reread"),
        pytest.param(SINCE - MS, SINCE, False, id="before_the_cursor"),
        pytest.param(SINCE - dt.timedelta(days=365), SINCE, False, id="long_before_the_cursor"),
        pytest.param(None, SINCE, True, id="null_updated_at_always_reread"),
    ],
)  # fmt: skip
def test_picks(updated_at: dt.datetime | None, since: dt.datetime | None, expected: bool) -> None:
    assert picks(updated_at, since) is expected


def test_select_rows_reads_what_picks_says(db_url: str) -> None:
    """The wiring: the SQL read of an append table takes exactly the rows :func:`picks` takes."""
    stamps: list[dt.datetime | None] = [
        None, SINCE - MINUTE, SINCE - MS, SINCE, SINCE + MS, T, T + MINUTE,
    ]  # fmt: skip
    spec = TABLES["orders"]
    with psycopg.connect(db_url) as conn:
        conn.execute("DELETE FROM operations.order_items")
        conn.execute("DELETE FROM operations.orders")
        for order_id, stamp in enumerate(stamps, start=1):
            conn.execute(
                "INSERT INTO operations.orders"
                " (order_id, order_date, customer_id, status, updated_at)"
                " VALUES (%s, DATE '2026-11-26', 1, 'PENDING', %s)",
                (order_id, stamp),
            )
        for since in (None, SINCE, T, T + dt.timedelta(days=1)):
            got = {row[0] for row in conn.execute(source.select_rows(spec, since)).fetchall()}
            want = {i for i, stamp in enumerate(stamps, start=1) if picks(stamp, since)}
            assert got == want, since
