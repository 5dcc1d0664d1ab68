"""The change-capture benchmark's SQL writer writes the contract's workload: one
transaction per row change, items on the customer's first order of today, a
customer's open order moved on, never more than the asked rate, and it stops
when told (no timing is asserted; the counts are)."""

from __future__ import annotations

import time
from datetime import datetime

import psycopg
import pytest
from psycopg import sql

from acme_mv.sample import load
from benchmarks import sql_writer

RATE = 300.0
SECONDS = 3.0


@pytest.fixture
def source(source_url: str) -> str:
    with psycopg.connect(source_url) as conn:
        load.load(conn, orders=300)
        conn.commit()
    return source_url


def _since(conn: psycopg.Connection[tuple[object, ...]], table: str, start: datetime) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE updated_at >= %s").format(
            sql.Identifier("operations", table)
        ),
        (start,),
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_the_sql_writer_writes_the_workload_one_change_per_transaction(source: str) -> None:
    with psycopg.connect(source, autocommit=True) as conn:
        start = conn.execute("SELECT localtimestamp(3)").fetchone()
        assert start is not None
        started: datetime = start[0]
        writers = sql_writer.SqlWriters(source, RATE, SECONDS, lanes=2)
        writers.start()
        writers.wait(SECONDS + 30)
        assert not writers.running() and writers.errors == []
        writers.stop()

        changed = {t: _since(conn, t, started) for t in ("orders", "order_items")}
        assert changed["order_items"] > 0 and changed["orders"] > 0
        # paced: never ahead of the schedule (an order's items may finish past the end), and
        # not stalled (a loose floor: rows, not changes, are counted, and the box may be busy)
        assert 0.1 * RATE * SECONDS <= sum(changed.values()) <= RATE * SECONDS + 2 * 33

        # each row change its own transaction
        row = conn.execute(
            "SELECT count(*), count(DISTINCT xmin::text) FROM operations.order_items "
            "WHERE created_at >= %s",
            (started,),
        ).fetchone()
        assert row is not None and row[0] == row[1]

        # items attach to the customer's first order dated today
        wrong = conn.execute(
            """
            SELECT i.order_item_id FROM operations.order_items i
              JOIN operations.orders o USING (order_id)
             WHERE i.created_at >= %s
               AND o.order_id <> (SELECT min(f.order_id) FROM operations.orders f
                                   WHERE f.customer_id = o.customer_id
                                     AND f.order_date = current_date)
            """,
            (started,),
        ).fetchall()
        assert wrong == []

        # a customer never has two open orders of today that the writer created
        doubled = conn.execute(
            """
            SELECT customer_id FROM operations.orders
             WHERE created_at >= %s AND status <> 'COMPLETED'
             GROUP BY customer_id HAVING count(*) > 1
            """,
            (started,),
        ).fetchall()
        assert doubled == []

        # the procedure is gone afterwards
        assert (
            conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'acme_bench'").fetchone()
            is None
        )


def test_stop_cancels_a_writer_in_the_middle(source: str) -> None:
    writers = sql_writer.SqlWriters(source, 100.0, 600.0, lanes=1)
    writers.start()
    time.sleep(1.0)
    assert writers.running()
    writers.stop()
    assert not writers.running() and writers.errors == []
    with psycopg.connect(source, autocommit=True) as conn:
        for _ in range(50):  # a closed session leaves pg_stat_activity a moment later
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (sql_writer.APPLICATION,),
            ).fetchone()
            if left == (0,):
                break
            time.sleep(0.1)
    assert left == (0,)


def test_each_lane_and_chunk_has_a_seed_of_its_own() -> None:
    """A chunk that started from the seed of the one before would repeat its picks."""
    seeds = {
        sql_writer.params(rate=1, seconds=1, lane=lane, lanes=2, chunk=chunk)["seed"]
        for lane in range(2)
        for chunk in range(50)
    }
    assert len(seeds) == 100 and all(-1.0 <= float(str(x)) <= 1.0 for x in seeds)
    again = sql_writer.params(rate=1, seconds=1, lane=1, lanes=2, chunk=7)["seed"]
    assert again in seeds  # reproducible


def test_the_changes_show_in_the_statistics_while_the_writer_runs(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The benchmarks read the rate reached from pg_stat_user_tables during the run: a
    procedure that never returned would show nothing until its end."""
    from benchmarks import probe

    monkeypatch.setattr(sql_writer, "CHUNK_S", 0.5)
    with psycopg.connect(source, autocommit=True) as conn:
        before = probe.changes_so_far(conn)
        writers = sql_writer.SqlWriters(source, RATE, 60.0, lanes=1)
        writers.start()
        try:
            seen = before
            for _ in range(100):  # until the first chunks' statistics arrive
                time.sleep(0.2)
                seen = probe.changes_so_far(conn)
                if seen > before:
                    break
            assert writers.running(), "still writing: the counts came from finished chunks"
        finally:
            writers.stop()
    assert seen > before


def test_what_the_writer_knows_of_today_outlives_a_chunk(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today's orders are read from the source once per session and day, not once per
    chunk: with no index but the primary key that read is a scan of the orders (counted)."""
    monkeypatch.setattr(sql_writer, "CHUNK_S", 0.3)
    with psycopg.connect(source, autocommit=True) as conn:

        def scans() -> int:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT seq_scan FROM pg_stat_user_tables "
                "WHERE schemaname = 'operations' AND relname = 'orders'"
            ).fetchone()
            assert row is not None
            return int(str(row[0]))

        before = scans()
        writers = sql_writer.SqlWriters(source, RATE, 3.0, lanes=1)
        writers.start()
        writers.wait(60)
        writers.stop()
        assert writers.errors == []
        for _ in range(50):  # the closed session's statistics arrive a moment later
            if scans() > before:
                break
            time.sleep(0.1)
        # one day's set-up reads today's orders three times (the low id, the open orders,
        # the first orders); ten chunks that each set up again would read them thirty times
        assert 0 < scans() - before <= 3
