"""The change-capture benchmark's SQL writer writes the contract's workload: one
transaction per row change, items on the customer's first order of today, a
customer's open order moved on, never more than the asked rate, and it stops
when told (no timing is asserted; the counts are)."""

from __future__ import annotations

import time
from datetime import datetime

import psycopg
import pytest

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
        f"SELECT count(*) FROM operations.{table} WHERE updated_at >= %s",  # noqa: S608 - fixed names
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
        # paced: never ahead of the schedule (an order's items may finish past the end)
        assert sum(changed.values()) <= RATE * SECONDS + 2 * 33

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
        left = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (sql_writer.APPLICATION,),
        ).fetchone()
    assert left == (0,)


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
