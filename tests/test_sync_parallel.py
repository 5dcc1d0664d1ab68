"""The first copy, parallel and serial: same rows, one snapshot, rows loaded once into an
index-free load table attached as the batch's partition at commit (no validation scan,
indexes attached not rebuilt), the latest state derived in the warehouse, kill-safe."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from acme_mv.errors import CopyFailed
from acme_mv.reports.refresh import refresh
from acme_mv.staging import apply, parallel, partitions
from acme_mv.staging.tables import TABLES
from acme_mv.sync import sync
from tests.support.cli_runner import child_env, run
from tests.support.database import DatabaseFactory
from tests.support.reports_oracle import assert_views_match, expected
from tests.support.sync_helpers import (
    APPEND_TABLES,
    assert_converged,
    execute,
    fill,
    scalar,
    settings,
    source_rows,
    staged_latest,
)

COUNTS = {"customers": 60, "products": 45, "orders": 3000, "order_items": 9000}
LOAD_TABLES = (
    "SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relname LIKE '\\_acme\\_load\\_%%'"
)
#: the batch's partition of each version table, and the names of its indexes
PARTITION_INDEXES = """
SELECT p.table_name, p.partition_name, array_agg(i.indexname::text ORDER BY i.indexname)
FROM staging.version_partitions AS p
JOIN pg_indexes AS i ON i.schemaname = 'staging' AND i.tablename = p.partition_name
WHERE %s >= p.from_batch AND %s < p.to_batch
GROUP BY 1, 2 ORDER BY 1
"""
#: indexes of the partitions that are not attached to an index of their partitioned table
UNATTACHED = """
SELECT count(*) FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid
WHERE t.relispartition AND t.relnamespace = 'staging'::regnamespace
  AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = x.indexrelid)
"""


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copy even the test tables (a few dozen blocks) in parallel, in several parts."""
    monkeypatch.setattr(parallel, "MIN_PART_BLOCKS", 1)


STATE_SHAPE = """
SELECT array_agg(x ORDER BY x) FROM (
    SELECT conrelid::regclass::text || ' ' || conname || ' ' || contype::text FROM pg_constraint
    WHERE conrelid IN ('staging.orders_state'::regclass, 'staging.order_items_state'::regclass)
      AND contype IN ('p', 'u')
    UNION ALL
    SELECT tablename || ' ' || indexname FROM pg_indexes
    WHERE schemaname = 'staging' AND tablename IN ('orders_state', 'order_items_state')
    UNION ALL
    SELECT 'comment ' || c.relname || ' ' || (obj_description(c.oid, 'pg_class') IS NOT NULL)::text
    FROM pg_class c
    WHERE c.oid IN ('staging.orders_state'::regclass, 'staging.order_items_state'::regclass)
) AS shape (x)
"""
STATE_SHAPE_AFTER_MIGRATION = sorted(
    [
        "staging.orders_state orders_state_pkey p",
        "staging.order_items_state order_items_state_pkey p",
        "orders_state orders_state_pkey",
        "order_items_state order_items_state_pkey",
        "order_items_state order_items_state_order_idx",
        "comment orders_state true",
        "comment order_items_state true",
    ]
)


def _oid(url: str, table: str) -> int:
    return int(scalar(url, "SELECT %s::regclass::oid", (f"staging.{table}",)))


def _state(url: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            sql.SQL("SELECT * FROM {} ORDER BY 1").format(
                sql.Identifier("staging", f"{table}_state")
            )
        ).fetchall()


def _deltas(url: str, table: str) -> list[tuple[Any, ...]]:
    """A first batch's delta rows, without the batch id (each warehouse draws its own)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT * FROM {}").format(sql.Identifier("analytics", table))
        ).fetchall()
    return sorted((r[1:] for r in rows), key=repr)


def _partition_indexes(url: str, batch_id: int) -> dict[str, tuple[str, list[str]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(PARTITION_INDEXES, (batch_id, batch_id)).fetchall()
    return {str(t): (str(p), list(i)) for t, p, i in rows}


def _built_on_the_load_table(partition: str) -> list[str]:
    """The names of the indexes built on a load table, once attached (two per version table)."""
    return [f"{partition}_0_idx", f"{partition}_1_idx"]


def _no_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any worker process fail the sync: what follows must run on the serial path."""

    def refuse(self: parallel.Loader, job: parallel.CopyJob) -> tuple[int, int]:
        raise AssertionError(f"a worker was started for {job.load_table}")

    monkeypatch.setattr(parallel.Loader, "_run_worker", refuse)


def _start_sync(db_url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "acme_mv", "sync", *args],
        env=child_env(ACME_MV_DATABASE_URL=db_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("deployment", ["separate", "one-database"])
def test_parallel_copy_equals_the_source_and_the_serial_copy(
    make_db: DatabaseFactory, deployment: str
) -> None:
    src = make_db("source") if deployment == "separate" else make_db("both")
    wh = make_db("warehouse") if deployment == "separate" else src
    serial_wh = make_db("warehouse")
    fill(src, **COUNTS)
    state_before = {t: _oid(wh, f"{t}_state") for t in APPEND_TABLES}
    result = sync(settings(src, wh), jobs=4)
    assert {t: r.mode for t, r in result.tables.items()} == {
        "customers": "reload",
        "products": "reload",
        "orders": "initial",
        "order_items": "initial",
    }
    assert {t: r.rows_read for t, r in result.tables.items()} == COUNTS
    assert_converged(src, wh)
    # the load tables became the batch's partitions, with the indexes the workers built
    found = _partition_indexes(wh, result.batch_id)
    assert set(found) == set(APPEND_TABLES)
    for _, (partition, indexes) in found.items():
        assert indexes == _built_on_the_load_table(partition)
    assert scalar(wh, UNATTACHED) == 0
    assert scalar(wh, LOAD_TABLES) == 0
    assert scalar(wh, "SELECT count(DISTINCT _batch_id) FROM staging.order_items") == 1
    # ... and the latest-state tables were loaded beside them and put in place: new tables under
    # the migration's names, constraints, indexes and comments
    assert scalar(wh, "SELECT count(*) FROM staging.order_items_state") == COUNTS["order_items"]
    assert all(_oid(wh, f"{t}_state") != state_before[t] for t in APPEND_TABLES)
    assert scalar(wh, STATE_SHAPE) == STATE_SHAPE_AFTER_MIGRATION
    # the serial path (--jobs 1) stages exactly the same rows, the same way in its own
    # transaction
    serial = sync(settings(src, serial_wh), jobs=1)
    assert {t: r.rows_read for t, r in serial.tables.items()} == COUNTS
    for _, (partition, indexes) in _partition_indexes(serial_wh, serial.batch_id).items():
        assert indexes == _built_on_the_load_table(partition)
    for table in ("customers", "products", *APPEND_TABLES):
        assert staged_latest(serial_wh, table) == staged_latest(wh, table)
    for table in APPEND_TABLES:
        assert _state(serial_wh, table) == _state(wh, table)
    for delta in ("open_orders_delta", "pending_orders_delta", "pending_items_delta"):
        assert _deltas(serial_wh, delta) == _deltas(wh, delta)
    # the next syncs are incremental on the attached partitions
    execute(
        src,
        "UPDATE operations.order_items SET quanity = -7, updated_at = CURRENT_TIMESTAMP(3) "
        "WHERE order_item_id <= 10",
    )
    again = sync(settings(src, wh), jobs=4)
    assert again.tables["order_items"].mode == "incremental"
    assert again.tables["order_items"].rows_new == 10
    assert_converged(src, wh)


def test_the_source_is_read_once_and_the_state_derived_in_the_warehouse(
    make_db: DatabaseFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker process copies a part of a version table; none reads the source again
    for the latest-state tables, which are derived from the loaded rows."""
    url = make_db("both")
    fill(url, **COUNTS)
    jobs: list[str] = []
    real = parallel.Loader._run_worker

    def recording(self: parallel.Loader, job: parallel.CopyJob) -> tuple[int, int]:
        jobs.append(job.load_table)
        return real(self, job)

    monkeypatch.setattr(parallel.Loader, "_run_worker", recording)
    result = sync(settings(url, url), jobs=3)
    batch = result.batch_id
    assert jobs and set(jobs) == {f"_acme_load_{batch}_{t}" for t in APPEND_TABLES}
    assert scalar(url, "SELECT count(*) FROM staging.orders_state") == COUNTS["orders"]
    assert scalar(url, "SELECT count(*) FROM staging.order_items_state") == COUNTS["order_items"]
    assert scalar(url, STATE_SHAPE) == STATE_SHAPE_AFTER_MIGRATION
    assert_converged(url, url)


#: the scans, so far in this transaction, of each version table's partitions (the versions)
VERSION_SCANS = """
SELECT p.table_name, sum(coalesce(x.seq_scan, 0) + coalesce(x.idx_scan, 0))::int
FROM staging.version_partitions AS p
LEFT JOIN pg_stat_xact_user_tables AS x ON x.schemaname = 'staging'
    AND x.relname = p.partition_name
GROUP BY 1 ORDER BY 1
"""


@pytest.mark.parametrize(("jobs", "scans"), [(1, {"order_items": 1, "orders": 1}), (3, {})])
def test_a_first_batchs_deltas_read_the_state_not_the_versions(
    make_db: DatabaseFactory, monkeypatch: pytest.MonkeyPatch, jobs: int, scans: dict[str, int]
) -> None:
    """A first batch's apply reads each version table at most once: the serial path derives
    the state from it (the parallel copy did that beside the index builds); the deltas are the
    summaries over the state tables. The scans counted in the batch's own transaction."""
    url = make_db("both")
    fill(url, **COUNTS)
    seen: list[dict[str, int]] = []
    real = apply.apply_batch

    def counting(conn: Any, batch_id: int, **kwargs: Any) -> apply.Applied:
        before = dict(conn.execute(VERSION_SCANS).fetchall())
        applied = real(conn, batch_id, **kwargs)
        after = dict(conn.execute(VERSION_SCANS).fetchall())
        seen.append({t: after[t] - before[t] for t in after if after[t] != before[t]})
        return applied

    monkeypatch.setattr(apply, "apply_batch", counting)
    result = sync(settings(url, url), jobs=jobs)
    assert (result.tables["orders"].mode, seen) == ("initial", [scans])
    refresh(settings(url, url))
    with psycopg.connect(url) as conn:
        assert_views_match(conn, expected(conn))


#: the batch's partitions with most blocks all-visible at once: COPY FREEZE marks each page it
#: fills from empty (a plain COPY marks none; VACUUM would do it later, writing them again)
FROZEN_PARTITIONS = """
SELECT array_agg(p.table_name ORDER BY p.table_name)
FROM staging.version_partitions AS p
JOIN pg_class AS c ON c.oid = ('staging.' || quote_ident(p.partition_name))::regclass
WHERE %s >= p.from_batch AND %s < p.to_batch AND c.relpages > 0 AND c.relallvisible * 2 > c.relpages
"""


def test_a_serial_first_copy_writes_its_rows_frozen(make_db: DatabaseFactory) -> None:
    """The rows go into a table created in the COPY's transaction, with FREEZE: the blocks of
    the batch's partitions are all-visible at once (relallvisible, as the load's ANALYZE
    counts it)."""
    url = make_db("both")
    fill(url, **COUNTS)
    result = sync(settings(url, url), jobs=1)
    assert scalar(url, FROZEN_PARTITIONS, (result.batch_id, result.batch_id)) == sorted(
        APPEND_TABLES
    )


def test_attach_proves_the_range_without_a_scan(db_url: str) -> None:
    """The load table's CHECK implies the partition constraint: PostgreSQL says so instead of
    scanning (without the CHECK it scans and says nothing)."""
    with psycopg.connect(db_url) as wh:
        wh.execute("SELECT set_config('acme_mv.batch_id', '7', true)")
        wh.execute(partitions.create_sql("_acme_load_7_orders", "orders", 7, 9))
        wh.execute("INSERT INTO staging._acme_load_7_orders (order_id) VALUES (1), (2)")
        wh.execute(
            "CREATE TABLE staging.orders_b7 (LIKE staging.orders INCLUDING DEFAULTS); "
            "ALTER TABLE staging.orders"
            " ATTACH PARTITION staging.orders_b7 FOR VALUES FROM (7) TO (9)"
        )
        target = partitions.Target(
            spec=TABLES["orders"],
            indexes=(),
            partition="orders_b7",
            start=7,
            end=9,
        )
        notices: list[str] = []
        wh.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        wh.execute("SET client_min_messages = debug1")
        partitions.attach(wh, target, 7)
        wh.execute("RESET client_min_messages")
        assert any("is implied by existing constraints" in n for n in notices), notices
        assert wh.execute("SELECT count(*) FROM staging.orders WHERE _batch_id = 7").fetchone() == (
            2,
        )
        checks = wh.execute(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'staging.orders_b7'::regclass "
            "AND conname = %s",
            (partitions.RANGE_CHECK,),
        ).fetchone()
        assert checks == (0,)
        wh.rollback()


def test_the_reports_over_a_parallel_copy_equal_the_oracle(make_db: DatabaseFactory) -> None:
    url = make_db("both")
    fill(url, **COUNTS)
    sync(settings(url, url), jobs=3)
    refresh(settings(url, url))
    with psycopg.connect(url) as conn:
        assert_views_match(conn, expected(conn))
    execute(
        url,
        "UPDATE operations.orders SET status = 'COMPLETED', updated_at = CURRENT_TIMESTAMP(3) "
        "WHERE order_id <= 500",
    )
    execute(url, "DELETE FROM operations.order_items WHERE order_item_id % 7 = 0")
    sync(settings(url, url), jobs=3, full=True)
    refresh(settings(url, url))
    with psycopg.connect(url) as conn:
        assert_views_match(conn, expected(conn))


def test_block_ranges_cover_the_table_once() -> None:
    spec = TABLES["order_items"]
    parts = parallel.split(spec, 10, 3)
    assert [(p.lo, p.hi) for p in parts] == [(0, 3), (3, 6), (6, None)]
    assert [p.query().as_string(None).split(" WHERE ")[1] for p in parts] == [
        "ctid < '(3,0)'::tid",
        "ctid >= '(3,0)'::tid AND ctid < '(6,0)'::tid",
        "ctid >= '(6,0)'::tid",
    ]
    assert [(p.lo, p.hi) for p in parallel.split(spec, 2, 5)] == [(0, 1), (1, None)]
    assert [(p.lo, p.hi) for p in parallel.split(spec, 0, 4)] == [(0, None)]


def test_small_tables_are_copied_serially(
    make_db: DatabaseFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_db("both")
    fill(url, **COUNTS)  # about 100 blocks
    monkeypatch.setattr(parallel, "MIN_PART_BLOCKS", 1024)
    _no_workers(monkeypatch)
    sync(settings(url, url), jobs=4)
    assert_converged(url, url)


def _wait_for_lock_waiter(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scalar(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'acme-mv sync' "
            "AND wait_event_type = 'Lock' AND wait_event = 'relation'",
        ):
            return
        time.sleep(0.05)
    raise AssertionError("no sync session waited for the locked table")


def test_every_worker_reads_the_one_snapshot_while_a_writer_commits(
    make_db: DatabaseFactory,
) -> None:
    """The workers copy the state the sync's own transaction saw, not a later one.

    A writer locks operations.order_items, so the sync waits before its
    snapshot; it changes orders and commits (the sync's snapshot, taken after
    its locks, sees that). Meanwhile the warehouse holds the names of the
    load tables (uncommitted tables of the same name), so no worker can
    start its COPY; the writer then commits a SECOND change and lets go.
    Workers that imported the exported snapshot stage the first state;
    workers with a snapshot of their own would stage the second.
    """
    src, wh = make_db("source"), make_db("warehouse")
    fill(src, **COUNTS)
    outcome: dict[str, object] = {}

    def run_sync() -> None:
        try:
            outcome["result"] = sync(settings(src, wh), jobs=4)
        except BaseException as exc:  # pragma: no cover - reported below
            outcome["error"] = exc

    wh_db = scalar(wh, "SELECT current_database()")
    with psycopg.connect(src) as writer, psycopg.connect(wh) as blocker:
        writer.execute("LOCK TABLE operations.order_items IN ACCESS EXCLUSIVE MODE")
        thread = threading.Thread(target=run_sync)
        thread.start()
        _wait_for_lock_waiter(src)  # past open_batch: the batch id is drawn
        batch = scalar(wh, "SELECT last_value FROM staging.sync_batch_id_seq")
        for table in APPEND_TABLES:
            blocker.execute(
                sql.SQL("CREATE TABLE {} (x int)").format(
                    sql.Identifier("staging", partitions.load_name(batch, table))
                )
            )
        writer.execute(
            "UPDATE operations.orders SET status = 'CHANGED', updated_at = CURRENT_TIMESTAMP(3) "
            "WHERE order_id % 3 = 0"
        )
        writer.commit()
        seen = {t: source_rows(src, t) for t in APPEND_TABLES}
        deadline = time.monotonic() + 60
        while not scalar(
            wh,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'acme-mv sync' "
            "AND datname = %s AND wait_event_type = 'Lock'",
            (wh_db,),
        ):
            assert time.monotonic() < deadline, "the load tables were never waited for"
            time.sleep(0.05)
        writer.execute(
            "UPDATE operations.order_items SET quanity = -1, updated_at = CURRENT_TIMESTAMP(3) "
            "WHERE order_item_id % 2 = 0"
        )
        writer.execute("DELETE FROM operations.order_items WHERE order_item_id % 5 = 0")
        writer.execute(
            "UPDATE operations.orders SET status = 'LATER', updated_at = CURRENT_TIMESTAMP(3) "
            "WHERE order_id % 4 = 0"
        )
        writer.commit()
        blocker.rollback()
    thread.join(timeout=120)
    assert "error" not in outcome, outcome
    assert {t: source_rows(src, t) for t in APPEND_TABLES} != seen
    staged = {t: staged_latest(wh, t) for t in APPEND_TABLES}
    assert staged == seen


def _wait_for_no_sync_sessions(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while scalar(
        url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'acme-mv sync'"
    ):
        assert time.monotonic() < deadline, "sync sessions outlived the killed sync"
        time.sleep(0.05)


_EMPTY_WAREHOUSE = """
TRUNCATE staging.orders, staging.order_items, staging.orders_state, staging.order_items_state,
    staging.sync_state, staging.customers, staging.products,
    analytics.open_orders_delta, analytics.pending_orders_delta, analytics.pending_items_delta
"""


@pytest.mark.slow
def test_a_sigkilled_parallel_sync_leaves_nothing_and_the_next_converges(
    make_db: DatabaseFactory,
) -> None:
    url = make_db("both")
    # big enough that order_items splits in the CLI process too (2 x MIN_PART_BLOCKS)
    fill(url, customers=200, products=300, orders=20000, order_items=200000)
    rng = random.Random(20261126)
    started = time.monotonic()
    first = _start_sync(url, "--jobs", "3")
    assert first.wait(timeout=180) == 0, first.communicate()[1]
    full_run = time.monotonic() - started
    killed = 0
    for _ in range(5):
        execute(url, _EMPTY_WAREHOUSE)  # back to a first copy
        proc = _start_sync(url, "--jobs", "3")
        time.sleep(rng.uniform(0.05, full_run))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.communicate(timeout=60)
        _wait_for_no_sync_sessions(url)  # the worker processes died with the sync
        # the old (empty) state, or the whole new one: never a part
        counts = {t: scalar(url, f"SELECT count(*) FROM staging.{t}") for t in APPEND_TABLES}
        assert counts in (
            {"orders": 0, "order_items": 0},
            {"orders": 20000, "order_items": 200000},
        ), counts
        assert scalar(url, UNATTACHED) == 0
    assert killed >= 1
    execute(url, _EMPTY_WAREHOUSE)
    final = _start_sync(url, "--jobs", "3")
    assert final.wait(timeout=180) == 0, final.communicate()[1]
    assert scalar(url, LOAD_TABLES) == 0  # the debris of the killed runs is gone
    assert_converged(url, url)


def test_a_sync_killed_in_its_attach_leaves_nothing(make_db: DatabaseFactory) -> None:
    """A reader holds staging.order_items: the attach waits for it, and is killed there."""
    url = make_db("both")
    fill(url, orders=2000, order_items=200000)  # parallel in the CLI process too
    with psycopg.connect(url) as reader:
        reader.execute("SELECT count(*) FROM staging.order_items")
        proc = _start_sync(url, "--jobs", "3")
        deadline = time.monotonic() + 120
        # every worker has committed its load table and the sync waits for the reader's lock
        while not scalar(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'acme-mv sync' "
            "AND wait_event_type = 'Lock' AND query LIKE 'DROP TABLE%%'",
        ):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert scalar(url, LOAD_TABLES) == 4  # versions and latest states of both tables
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        reader.rollback()
    for table in (*APPEND_TABLES, "orders_state", "order_items_state", "sync_batches"):
        assert scalar(url, f"SELECT count(*) FROM staging.{table}") == 0
    after = _start_sync(url, "--jobs", "3")
    assert after.wait(timeout=120) == 0, after.communicate()
    assert scalar(url, LOAD_TABLES) == 0
    assert_converged(url, url)


def _break_order_items(url: str) -> None:
    """A CHECK on staging.order_items that some source rows break: the load tables get it by
    LIKE ... INCLUDING CONSTRAINTS. The first batch's partition is made here, with the CHECK
    (a partition made by the batch, LIKE ... INCLUDING DEFAULTS, could not be attached)."""
    execute(
        url,
        "ALTER TABLE staging.order_items ADD CONSTRAINT small_quanity CHECK (quanity < 990); "
        "CREATE TABLE staging.order_items_b1 (LIKE staging.order_items INCLUDING DEFAULTS "
        "INCLUDING CONSTRAINTS); "
        "ALTER TABLE staging.order_items ATTACH PARTITION staging.order_items_b1 "
        "FOR VALUES FROM (1) TO (65); "
        "INSERT INTO staging.version_partitions VALUES ('order_items', 'order_items_b1', 1, 65)",
    )


def test_a_failing_worker_stops_the_sync_and_leaves_nothing(make_db: DatabaseFactory) -> None:
    url = make_db("both")
    fill(url, **COUNTS)
    _break_order_items(url)
    with pytest.raises(CopyFailed, match="small_quanity") as failed:
        sync(settings(url, url), jobs=3)
    assert failed.value.table == "order_items"
    assert scalar(url, LOAD_TABLES) == 0
    for table in (*APPEND_TABLES, "sync_batches"):
        assert scalar(url, f"SELECT count(*) FROM staging.{table}") == 0


def test_cli_jobs_option(db_url: str, cli_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(db_url, **COUNTS)
    cli_env(database_url=db_url)
    bad = run("sync", "--jobs", "0")
    assert bad.exit_code == 2
    assert "--jobs" in bad.stderr and "Traceback" not in bad.stderr
    _no_workers(monkeypatch)
    res = run("sync", "--jobs", "1")
    assert res.exit_code == 0, res.stderr
    assert "order_items: initial, 9000 rows read, 9000 new" in res.stderr
    assert_converged(db_url, db_url)


def test_cli_a_failing_worker_is_one_line(db_url: str, cli_env: Any) -> None:
    fill(db_url, **COUNTS)
    _break_order_items(db_url)
    cli_env(database_url=db_url)
    res = run("sync", "--jobs", "2")
    assert res.exit_code == 1
    errors = [
        line for line in res.stderr.splitlines() if not line.startswith(" ") and "INFO" not in line
    ]
    assert len(errors) == 1 and errors[0].startswith("Error: copying order_items part 1/"), (
        res.stderr
    )
    assert "small_quanity" in errors[0] and "Traceback" not in res.stderr
