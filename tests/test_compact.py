"""Compaction: whole partitions of old versions and old deltas go, the current state and the
reports stay exact, --as-of inside the window is unchanged and outside it is one clear error;
under a concurrent reader and a concurrent sync nobody is blocked and no current row is lost."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow

import acme_mv.staging.partitions
from acme_mv.config import Settings
from acme_mv.errors import BadArgument, HistoryUnavailable
from acme_mv.reports.export import as_of_query, resolve_as_of
from acme_mv.reports.refresh import refresh
from acme_mv.reports.verify import verify
from acme_mv.staging.compact import compact, parse_keep
from acme_mv.sync import sync
from tests.support.batch_writes import tombstones
from tests.support.cli_runner import run
from tests.support.reports_oracle import FROM_SCRATCH, assert_views_match, expected
from tests.support.source_writes import stamp_updates_like_the_jobs
from tests.support.staging_copy import copy_batch

REPORTS = list(FROM_SCRATCH)


#: a partition every 2 batches (a day's worth in production), no sync safety margin
pytestmark = pytest.mark.usefixtures("small_partitions", "no_safety_margin")


def _as_of_all(url: str, at: datetime) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(url) as conn:
        past = resolve_as_of(conn, at, timezone="UTC")
        queries = {
            n: as_of_query(n, past, limit=100 if n.startswith("top_") else None) for n in REPORTS
        }
        # execute() takes a Composed; as_of_query() is typed as any Composable
        return {n: [tuple(r) for r in conn.execute(sql.Composed([q]))] for n, q in queries.items()}


def _cycle(conn: psycopg.Connection[tuple[object, ...]], url: str, step: int) -> None:
    conn.execute(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) "
        "SELECT DATE '2026-12-10' + g % 5, g % 7, 'PENDING' FROM generate_series(1, 30) g"
    )
    conn.execute(
        "INSERT INTO operations.order_items (order_id, product_id, quanity) "
        "SELECT o.order_id, g %% 4, g FROM operations.orders o, generate_series(1, "
        "3) g WHERE o.order_id > %s",
        ((step) * 30,),
    )
    conn.execute(
        "UPDATE operations.orders SET status = (ARRAY['PROCESSING','COMPLETED','REPROCESSING'])[1 "
        "+ order_id %% 3] WHERE order_id %% 4 = %s",
        (step % 4,),
    )
    copy_batch(url, url)


def _six_cycles(
    db_url: str,
) -> tuple[psycopg.Connection[TupleRow], Settings, list[datetime]]:
    """Six sync + refresh cycles; returns the connection (the caller closes it), the settings and
    when each batch finished."""
    conn = psycopg.connect(db_url, autocommit=True)
    stamp_updates_like_the_jobs(conn)
    settings = Settings(database_url=db_url)
    finished: list[datetime] = []
    for step in range(6):
        _cycle(conn, db_url, step)
        refresh(settings)
        row = conn.execute("SELECT max(finished_at) FROM staging.sync_batches").fetchone()
        assert row is not None
        finished.append(row[0])
    return conn, settings, finished


def _staged(conn: psycopg.Connection[TupleRow]) -> tuple[int, int]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM staging.orders), (SELECT count(*) FROM staging.orders_state)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_compaction_drops_old_partitions_and_keeps_everything_current(db_url: str) -> None:
    conn, settings, finished = _six_cycles(db_url)
    tombstones(db_url, orders=[3])
    conn.execute("DELETE FROM operations.orders WHERE order_id = 3")
    refresh(settings)
    before = {at: _as_of_all(db_url, at) for at in finished}
    versions_before, live = _staged(conn)
    parts_before = conn.execute("SELECT count(*) FROM staging.version_partitions").fetchone()

    keep_from = finished[3]  # keep the history from the 4th batch on
    result = compact(
        settings, keep=timedelta(hours=1), now=keep_from + timedelta(hours=1, microseconds=1)
    )

    assert result.history_batch_id == 4 and result.delta_rows_deleted > 0
    assert result.partitions_dropped  # [1, 3) for both tables, at least
    versions_after, live_after = _staged(conn)
    assert versions_after < versions_before and live_after == live
    assert conn.execute("SELECT count(*) FROM staging.version_partitions").fetchone() < parts_before  # type: ignore[operator]
    assert_views_match(conn, expected(conn))
    verify(settings)
    for at in finished[3:]:  # inside the window: exactly as before
        assert _as_of_all(db_url, at) == before[at]
    with pytest.raises(HistoryUnavailable) as info:
        _as_of_all(db_url, finished[1])
    assert info.value.history_batch_id == 4
    # and it goes on: more batches, refreshes, a rollover, a rebuild
    _cycle(conn, db_url, 6)
    refresh(settings, mode="historic")
    refresh(settings, mode="rebuild")
    assert_views_match(conn, expected(conn))
    verify(settings)
    again = compact(settings, keep=None)
    assert again.partitions_dropped == [] and again.history_batch_id == 4
    conn.close()


def test_compaction_under_a_concurrent_reader_and_a_concurrent_sync(db_url: str) -> None:
    conn, settings, _ = _six_cycles(db_url)
    errors: list[BaseException] = []
    reads = [0]
    done = threading.Event()

    def reader() -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as r:
                r.execute("SET lock_timeout = '1s'")
                while not done.is_set():
                    r.execute("SELECT count(*) FROM analytics.open_orders").fetchone()
                    r.execute("SELECT count(*) FROM analytics.pending_items").fetchone()
                    r.execute(
                        "SELECT count(*) FROM staging.orders"
                    ).fetchone()  # the partitions themselves
                    reads[0] += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    def syncer() -> None:
        try:
            for step in range(6, 10):
                with psycopg.connect(db_url, autocommit=True) as w:
                    _cycle(w, db_url, step)
                refresh(settings)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader), threading.Thread(target=syncer)]
    for t in threads:
        t.start()
    try:
        result = compact(settings, keep=timedelta(0))
    finally:
        threads[1].join()
        done.set()
        threads[0].join()
    assert not errors, errors
    assert result.partitions_dropped and reads[0] > 0
    refresh(settings)
    assert_views_match(conn, expected(conn))
    verify(settings)
    conn.close()


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("35d", timedelta(days=35)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("all", None),
    ],
    ids=["days", "hours", "minutes", "compound", "all"],
)
def test_parse_keep(text: str, want: timedelta | None) -> None:
    assert parse_keep(text) == want


@pytest.mark.parametrize("text", ["a week", "0s", ""], ids=["words", "zero", "empty"])
def test_parse_keep_refuses_nonsense(text: str) -> None:
    with pytest.raises(BadArgument, match="--keep-history"):
        parse_keep(text)


def test_cli_compact(db_url: str, cli_env: Callable[..., None]) -> None:
    cli_env(database_url=db_url)
    copy_batch(db_url, db_url)
    res = run("compact", "--keep-history", "all")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.startswith(
        "compacted: history kept from batch 0; 0 delta rows and 0 partitions dropped"
    )
    res = run("compact", "--keep-history", "soon")
    assert res.exit_code == 2 and "is not a window" in res.stderr  # a usage error


def test_cli_verify_fails_with_exit_6_on_a_difference(
    db_url: str, cli_env: Callable[..., None]
) -> None:
    cli_env(database_url=db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
            "('2026-12-11', 1, 'PENDING')"
        )
    copy_batch(db_url, db_url)
    refresh(Settings(database_url=db_url))
    assert run("verify").exit_code == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE analytics.open_orders_historic SET n = n + 1")
    res = run("verify")
    assert res.exit_code == 6
    assert (
        "verify: 1 differing rows: open_orders (2026-12-11, PENDING): have 2, from scratch 1"
        in res.stderr
    )


def test_staging_stays_at_the_live_keys_plus_the_window(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 simulated days, one batch a day (its finish time moved to that day) and a partition a
    day, 10% of the orders changing daily and 2% new ones, compaction every day with a 7-day
    window: staging (state + kept versions) stays within 1.1x (live keys + the last 7 days'
    versions), whatever the age."""
    monkeypatch.setattr(acme_mv.staging.partitions, "MIN_BATCHES", 1)
    conn = psycopg.connect(db_url, autocommit=True)
    stamp_updates_like_the_jobs(conn)
    settings = Settings(database_url=db_url)
    day0 = datetime(2026, 1, 1, tzinfo=UTC)
    conn.execute(
        "INSERT INTO operations.orders (delivery_date, customer_id, status) "
        "SELECT DATE '2026-12-10' + g % 5, g % 7, 'PENDING' FROM generate_series(1, 500) g"
    )
    written: list[int] = []
    for day in range(30):
        conn.execute(
            "INSERT INTO operations.orders (delivery_date, customer_id, status) "
            "SELECT DATE '2026-12-10', 1, 'PENDING' FROM generate_series(1, 10)"
        )
        conn.execute(
            "UPDATE operations.orders SET status = CASE WHEN status = 'PENDING' THEN 'PROCESSING' "
            "ELSE 'PENDING' END WHERE order_id %% 10 = %s",
            (day % 10,),
        )
        result = sync(Settings(database_url=db_url, source_url=db_url))
        written.append(result.tables["orders"].rows_new)
        conn.execute(
            "UPDATE staging.sync_batches SET started_at = %s, finished_at = %s WHERE batch_id = %s",
            (day0 + timedelta(days=day), day0 + timedelta(days=day), result.batch_id),
        )
        refresh(settings)
        compact(settings, keep=timedelta(days=7), now=day0 + timedelta(days=day, hours=1))
        live, versions = (
            int(v)
            for v in conn.execute(
                "SELECT (SELECT count(*) FROM staging.orders_state), (SELECT "
                "count(*) FROM staging.orders)"
            ).fetchone()
            or ()
        )
        window = sum(written[-7:])
        assert live + versions <= 1.1 * (live + window), (day, live, versions, window)
    partitions = conn.execute(
        "SELECT count(*) FROM staging.version_partitions WHERE table_name = 'orders'"
    ).fetchone()
    assert partitions is not None and partitions[0] < 10
    assert_views_match(conn, expected(conn))
    verify(settings)
    conn.close()


def test_run_compacts_after_a_fold_only(db_url: str) -> None:
    """``run --keep-history``: the cycle whose refresh folded a new day compacts; others do not."""
    import dataclasses

    from acme_mv.reports.refresh import DAY_CHANGED
    from acme_mv.run.loop import compact_after_fold

    conn = psycopg.connect(db_url, autocommit=True)
    stamp_updates_like_the_jobs(conn)
    settings = Settings(database_url=db_url)
    for step in range(3):
        _cycle(conn, db_url, step)
        result = refresh(settings)

    def history_from() -> object:
        row = conn.execute("SELECT history_batch_id FROM analytics.snapshot").fetchone()
        assert row is not None
        return row[0]

    before = history_from()
    window = timedelta(microseconds=1)  # everything before the newest batch is out of it
    compact_after_fold(
        settings, window, dataclasses.replace(result, reason="asked for (--historic)")
    )
    compact_after_fold(
        settings, None, dataclasses.replace(result, reason=f"{DAY_CHANGED} (a -> b)")
    )
    assert history_from() == before
    compact_after_fold(
        settings, window, dataclasses.replace(result, reason=f"{DAY_CHANGED} (a -> b)")
    )
    assert history_from() != before
    assert_views_match(conn, expected(conn))
    verify(settings)
    conn.close()


def test_a_full_sync_tombstones_a_live_key_whose_versions_were_compacted(db_url: str) -> None:
    """Compaction may drop the only version of a key that is still live (the state table keeps
    it); a delete of that key at the source must still leave the reports after ``sync --full``."""
    conn, settings, finished = _six_cycles(db_url)
    result = compact(
        settings, keep=timedelta(hours=1), now=finished[3] + timedelta(hours=1, microseconds=1)
    )
    assert result.partitions_dropped
    row = conn.execute(
        "SELECT s.order_id FROM staging.orders_state AS s JOIN operations.orders AS o USING "
        "(order_id) WHERE o.status <> 'COMPLETED' AND NOT EXISTS (SELECT 1 FROM staging.orders AS "
        "v WHERE v.order_id = s.order_id) ORDER BY 1 LIMIT 1"
    ).fetchone()
    assert row is not None, "the precondition: an open order whose every version was compacted away"
    conn.execute("DELETE FROM operations.order_items WHERE order_id = %s", (row[0],))
    conn.execute("DELETE FROM operations.orders WHERE order_id = %s", (row[0],))
    copy_batch(db_url, db_url, full=True)
    refresh(settings)
    assert conn.execute(
        "SELECT count(*) FROM staging.orders_state WHERE order_id = %s", row
    ).fetchone() == (0,)
    assert_views_match(conn, expected(conn))
    verify(settings)
    conn.close()
