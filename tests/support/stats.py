"""Reading PostgreSQL's cumulative statistics in a test, once they have landed.

A session flushes its counts (tuples read, scans) when it exits, a moment after its client
closed it, and at most once a second while it runs: the test's own session too, whose reads
would otherwise land in a later count. A test that counts the work of sessions it just closed
flushes its own counts, waits until no other client session of the database is left and two
reads in a row agree; only then are the counts complete.
"""

from __future__ import annotations

import threading

import psycopg
from psycopg.rows import TupleRow

#: 200 polls of 50 ms: a session's exit takes milliseconds, 10 s is a loaded machine's worst
POLLS = 200
POLL_S = 0.05


def settled(
    conn: psycopg.Connection[TupleRow], query: str, params: tuple[object, ...] = ()
) -> list[TupleRow]:
    """The rows of ``query`` (over ``pg_stat_*``) once the other sessions' counts have landed.

    ``conn`` is an autocommit connection to the database whose statistics are read.
    """
    previous: list[TupleRow] | None = None
    for _ in range(POLLS):
        # this session's own counts land as its statement ends (PostgreSQL 15+)
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT pg_stat_clear_snapshot()")
        others = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchone()
        now = conn.execute(query, params or None).fetchall()
        if others == (0,) and now == previous:
            return now
        previous = now
        threading.Event().wait(POLL_S)
    raise AssertionError("the statistics did not settle: another session stayed connected")
