"""A table rewrite on the source while a sync runs loses nothing.

A rewrite (``ALTER TABLE ... ADD COLUMN x DEFAULT <volatile>``, ``ALTER COLUMN
... TYPE ... USING``) writes every row under a new transaction id: a snapshot
taken before it committed reads the table as empty (PostgreSQL's MVCC caveat).
The sync takes ACCESS SHARE on every table before its snapshot, so the rewrite
either finishes first (and the snapshot sees it whole) or waits for the sync.

The interleavings are forced, not timed: the rewrite starts from the sync's own
progress callback once the snapshot exists, and the test goes on only when the
rewrite has either committed or is seen waiting for a lock in ``pg_locks``.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest

from acme_mv.config import Settings
from acme_mv.reports.refresh import refresh
from acme_mv.sync import TABLES, Mode, SourceLocked, TableResult, source, sync
from tests.support.cli_runner import child_env
from tests.support.reports_oracle import assert_views_match, expected
from tests.support.sync_helpers import execute, fill, scalar, settings, source_rows, staged_latest

COUNTS = {"customers": 50, "products": 40, "orders": 300, "order_items": 1200}

#: rewrites of every kind the issue names, one transaction; none changes a contract column's type
REWRITE = """
ALTER TABLE operations.products ADD COLUMN rewritten text DEFAULT md5(random()::text);
ALTER TABLE operations.orders ADD COLUMN rewritten text DEFAULT md5(random()::text);
ALTER TABLE operations.order_items ALTER COLUMN quanity TYPE integer USING quanity + 0;
"""

#: changes between two syncs that move every report
CHANGES = [
    "UPDATE operations.orders SET status = 'PENDING', updated_at = "
    "CURRENT_TIMESTAMP(3) WHERE order_id % 3 = 0",
    "UPDATE operations.orders SET status = 'COMPLETED', updated_at = "
    "CURRENT_TIMESTAMP(3) WHERE order_id % 7 = 1",
    "UPDATE operations.order_items SET quanity = 500, updated_at = CURRENT_TIMESTAMP(3) "
    "WHERE order_item_id % 5 = 0",
    "INSERT INTO operations.order_items (order_id, product_id, quanity) "
    "SELECT 1 + g % 40, 1 + g % 30, 100 FROM generate_series(1, 200) g",
    "UPDATE operations.products SET product_name = 'renamed ' || product_id, updated_at = "
    "CURRENT_TIMESTAMP(3) WHERE product_id % 2 = 0",
]


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``check`` until it holds (a guard against hanging, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def _lock_waits(
    url: str, *, pid: int | None = None, application: str | None = None
) -> Callable[[], bool]:
    """A check: is the session ``pid`` (or one named ``application``) of this database waiting for
    a lock?

    Only this test's database: other tests' syncs (same application name) run on the same server.
    """

    def waiting() -> bool:
        return bool(
            scalar(
                url,
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE NOT l.granted AND a.datname = current_database() "
                "AND (l.pid = %(pid)s OR a.application_name = %(app)s)",
                {"pid": pid, "app": application},
            )
        )

    return waiting


class RewriteMidSync:
    """A progress callback that runs :data:`REWRITE` when the sync starts ``table``.

    By then the sync's snapshot exists (the first table was read under it). The
    callback returns when the rewrite has committed or is blocked on a lock:
    never both, and which one depends only on the locks the sync holds.
    """

    def __init__(self, url: str, table: str) -> None:
        self.url = url
        self.table = table
        self.thread: threading.Thread | None = None
        self.errors: list[BaseException] = []
        self.blocked = False

    def start(self, table: str, mode: Mode) -> None:
        if table != self.table or self.thread is not None:
            return
        conn = psycopg.connect(self.url, autocommit=True)
        pid = conn.info.backend_pid

        def rewrite() -> None:
            try:
                with conn, conn.transaction():
                    conn.execute(REWRITE)
            except BaseException as exc:  # surfaced by join()
                self.errors.append(exc)

        self.thread = threading.Thread(target=rewrite)
        self.thread.start()
        thread, blocked = self.thread, _lock_waits(self.url, pid=pid)
        _wait_until(lambda: not thread.is_alive() or blocked(), "the rewrite to commit or block")
        self.blocked = thread.is_alive()

    def advance(self, table: str, nbytes: int) -> None:
        pass

    def finish(self, result: TableResult) -> None:
        pass

    def join(self) -> None:
        assert self.thread is not None, f"the sync never started {self.table}"
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        assert not self.errors, self.errors


def _differing_tables(src: str, wh: str) -> list[str]:
    """Tables whose latest staged rows differ from the source's (all of them, to show what a bug
    lost)."""
    return [t for t in TABLES if staged_latest(wh, t) != source_rows(src, t)]


def _refresh_and_compare(src: str, wh: str) -> None:
    refresh(Settings(database_url=wh, source_url=src))
    with psycopg.connect(src) as s, psycopg.connect(wh) as w:
        assert_views_match(w, expected(s))


@pytest.mark.parametrize("full", [False, True], ids=["incremental", "full"])
def test_rewrite_committed_mid_sync_loses_nothing(
    source_url: str, warehouse_url: str, full: bool
) -> None:
    src, wh = source_url, warehouse_url
    fill(src, **COUNTS)
    sync(settings(src, wh))
    for change in CHANGES:
        execute(src, change)
    # customers is read first, under the snapshot; the rewrite comes as products starts
    racer = RewriteMidSync(src, "products")
    result = sync(settings(src, wh), full=full, progress=racer)
    racer.join()
    assert _differing_tables(src, wh) == []  # mirror reload and full copy included: nothing empty
    _refresh_and_compare(src, wh)  # no --full needed
    assert result.tables["order_items"].rows_read >= (1400 if full else 440)
    # the sync held its tables: the rewrite waited for it, then really happened
    assert racer.blocked
    assert scalar(src, "SELECT count(rewritten) FROM operations.orders") == 300
    # and a later sync on the rewritten tables changes nothing
    again = sync(settings(src, wh))
    assert sum(t.rows_new + t.rows_deleted for t in again.tables.values()) == 0


@contextmanager
def _rewrite_open(url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A rewrite of operations.order_items that has run but not committed yet."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "ALTER TABLE operations.order_items ALTER COLUMN quanity TYPE integer USING quanity + 0"
        )
        yield conn


def _sync_process(src: str, wh: str, *args: str) -> subprocess.Popen[str]:
    """``acme-mv sync`` in a child process (a waiting sync must not hold this process)."""
    env = child_env(ACME_MV_DATABASE_URL=wh, ACME_MV_SOURCE_URL=src)
    return subprocess.Popen(
        [sys.executable, "-m", "acme_mv", "sync", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_rewrite_already_running_is_waited_for(source_url: str, warehouse_url: str) -> None:
    src, wh = source_url, warehouse_url
    fill(src, **COUNTS)
    sync(settings(src, wh))
    for change in CHANGES:
        execute(src, change)
    with _rewrite_open(src) as ddl:
        proc = _sync_process(src, wh)
        _wait_until(
            _lock_waits(src, application="acme-mv sync"), "the sync to wait for the rewrite"
        )
        ddl.commit()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert _differing_tables(src, wh) == []
    _refresh_and_compare(src, wh)
    assert "operations.order_items is locked by another session" in err


def test_a_rewrite_held_too_long_stops_the_sync_with_a_clear_error(db_url: str) -> None:
    fill(db_url, **COUNTS)
    with _rewrite_open(db_url):
        proc = _sync_process(db_url, db_url, "--lock-timeout", "0.3")
        _, err = proc.communicate(timeout=120)
        with pytest.raises(SourceLocked) as info:
            sync(settings(db_url, db_url), lock_timeout=dt.timedelta(milliseconds=300))
    assert proc.returncode == 3, err
    lines = [line for line in err.splitlines() if line.startswith("Error")]
    assert (
        len(lines) == 1 and "operations.order_items stayed locked by another session" in lines[0]
    ), err
    assert info.value.table == "operations.order_items"
    assert info.value.exit_code == 3
    # both batches were rolled back: nothing staged, no cursor moved
    assert scalar(db_url, "SELECT count(*) FROM staging.sync_batches") == 0
    assert scalar(db_url, "SELECT count(*) FROM staging.orders") == 0


def test_lock_table_takes_no_snapshot(source_url: str) -> None:
    """What the fix rests on: in REPEATABLE READ the snapshot starts at the first query, not at
    LOCK."""
    fill(source_url, orders=5)
    with (
        psycopg.connect(source_url) as reader,
        psycopg.connect(source_url, autocommit=True) as writer,
    ):
        reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        reader.read_only = True
        with reader.transaction():
            source.lock_tables(reader, [TABLES["orders"]])
            writer.execute("INSERT INTO operations.orders (status) VALUES ('PENDING')")
            seen = reader.execute("SELECT count(*) FROM operations.orders").fetchone()
            writer.execute("INSERT INTO operations.orders (status) VALUES ('PENDING')")
            still = reader.execute("SELECT count(*) FROM operations.orders").fetchone()
    assert seen == (6,)  # committed after the LOCK, before the first query: visible
    assert still == (6,)  # the snapshot is fixed from the first query on


def test_a_deadlock_with_a_multi_table_ddl_ends_cleanly(db_url: str) -> None:
    """DDL holding order_items then wanting orders, while the sync holds orders and waits for
    order_items: PostgreSQL cancels one side; if it is the sync, one clear SourceLocked line,
    nothing staged."""
    fill(db_url, **COUNTS)
    outcome: list[BaseException | None] = []

    def run_sync() -> None:
        try:
            sync(settings(db_url, db_url))
            outcome.append(None)
        except BaseException as exc:  # inspected below
            outcome.append(exc)

    with psycopg.connect(db_url) as ddl:
        ddl.execute("LOCK TABLE operations.order_items IN ACCESS EXCLUSIVE MODE")
        syncing = threading.Thread(target=run_sync)
        syncing.start()
        _wait_until(
            _lock_waits(db_url, application="acme-mv sync"), "the sync to wait for order_items"
        )
        try:
            ddl.execute("LOCK TABLE operations.orders IN ACCESS EXCLUSIVE MODE")
            ddl_lost = False
        except psycopg.errors.DeadlockDetected:
            ddl_lost = True
        ddl.rollback()
    syncing.join(timeout=120)
    [error] = outcome
    if ddl_lost:  # the DDL was the victim: the sync went on and is complete
        assert error is None
        assert _differing_tables(db_url, db_url) == []
    else:
        assert isinstance(error, SourceLocked), error
        assert "deadlocked with another session" in str(error)
        assert error.table == "operations.order_items"
        assert scalar(db_url, "SELECT count(*) FROM staging.sync_batches") == 0
