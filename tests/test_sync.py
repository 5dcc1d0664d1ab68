from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time

import psycopg
import psycopg.sql
import pytest
from psycopg.rows import TupleRow

from acme_mv.errors import ConfigError
from acme_mv.run import loop as runner
from acme_mv.staging.copy import INDEX_BUILD_MEMORY_KB, _raise_index_memory, copy_out_chunks, stream
from acme_mv.sync import source, sync
from tests.support.database import DatabaseFactory
from tests.support.roles import RoleFactory
from tests.support.stats import settled
from tests.support.sync_helpers import (
    APPEND_TABLES,
    assert_converged,
    compared_tables,
    execute,
    fill,
    scalar,
    settings,
    staged_latest,
    versions,
)

COUNTS = {"customers": 60, "products": 45, "orders": 300, "order_items": 900}


@pytest.fixture(params=["separate", "one-database"])
def urls(request: pytest.FixtureRequest, make_db: DatabaseFactory) -> tuple[str, str]:
    """(source, warehouse): two databases, or the one-database deployment."""
    if request.param == "separate":
        return make_db("source"), make_db("warehouse")
    url = make_db("both")
    return url, url


def test_initial_sync_copies_everything(urls: tuple[str, str]) -> None:
    src, wh = urls
    fill(src, **COUNTS)
    result = sync(settings(src, wh))
    assert {t: r.mode for t, r in result.tables.items()} == {
        "customers": "reload",
        "products": "reload",
        "orders": "initial",
        "order_items": "initial",
    }
    assert {t: r.rows_read for t, r in result.tables.items()} == COUNTS
    assert {t: r.rows_new for t, r in result.tables.items()} == COUNTS
    assert_converged(src, wh)
    for table in APPEND_TABLES:
        assert set(versions(wh, table).values()) == {1}
    # a first copy into empty staging tables compares nothing with the source
    assert compared_tables(wh, result.batch_id) == []
    # the partitioned tables keep their migration's indexes (the load table's are attached)
    names = scalar(
        wh,
        "SELECT array_agg(indexname::text ORDER BY indexname) FROM pg_indexes WHERE schemaname = "
        "'staging' AND tablename IN ('orders', 'order_items')",
    )
    assert names == [
        "order_items_batch_idx",
        "order_items_key_batch_idx",
        "orders_batch_idx",
        "orders_key_batch_idx",
    ]


def test_incremental_picks_up_inserts_and_updates(urls: tuple[str, str]) -> None:
    src, wh = urls
    fill(src, **COUNTS)
    sync(settings(src, wh))
    fill(src, orders=20, order_items=30)
    execute(
        src,
        "UPDATE operations.orders SET status = 'DONE', updated_at = "
        "CURRENT_TIMESTAMP(3) WHERE order_id <= 10",
    )
    execute(
        src,
        "UPDATE operations.order_items SET quanity = 7, updated_at = CURRENT_TIMESTAMP(3) WHERE "
        "order_item_id IN (1, 2, 3)",
    )
    execute(
        src,
        "UPDATE operations.customers SET customer_address = 'moved', updated_at = "
        "CURRENT_TIMESTAMP(3) WHERE customer_id = 1",
    )
    result = sync(settings(src, wh))
    assert result.tables["orders"].mode == "incremental"
    assert result.tables["orders"].rows_new == 30
    assert result.tables["order_items"].rows_new == 33
    assert result.tables["customers"].rows_new == 1
    assert_converged(src, wh)
    assert versions(wh, "orders")[1] == 2
    assert versions(wh, "orders")[11] == 1


def test_ties_on_the_cursor_are_read_again(urls: tuple[str, str]) -> None:
    src, wh = urls
    fill(src, orders=50)
    first = sync(settings(src, wh), tables=["orders"])
    cursor = first.tables["orders"].cursor
    # rows stamped exactly at the cursor, written after the sync read
    execute(
        src,
        "UPDATE operations.orders SET status = 'TIED', updated_at = %s WHERE order_id <= 5",
        (cursor,),
    )
    execute(
        src,
        "INSERT INTO operations.orders (order_id, status, updated_at) VALUES (1000, 'NEW', %s)",
        (cursor,),
    )
    second = sync(settings(src, wh), tables=["orders"])
    assert second.tables["orders"].rows_new == 6
    assert_converged(src, wh, ("orders",))


def test_late_commit_is_not_lost(urls: tuple[str, str]) -> None:
    """dlt issue 2269: a row stamped before a sync's read but committed after it."""
    src, wh = urls
    fill(src, orders=20, order_items=20)
    sync(settings(src, wh))
    with psycopg.connect(src) as late:
        late.execute(
            "UPDATE operations.orders SET status = 'LATE', updated_at = "
            "CURRENT_TIMESTAMP(3) WHERE order_id = 3"
        )
        late.execute(
            "INSERT INTO operations.order_items (order_item_id, quanity) VALUES (5000, 42)"
        )
        stamped = late.execute("SELECT now()::timestamp(3)").fetchone()
        assert stamped is not None
        time.sleep(
            1.5
        )  # a naive cursor (the sync's clock minus the margin) would now be past the stamp
        during = sync(settings(src, wh))
        assert during.tables["orders"].cursor <= stamped[0]
        late.commit()
    assert ("LATE",) not in [(r[4],) for r in staged_latest(wh, "orders")]
    sync(settings(src, wh))
    assert_converged(src, wh, APPEND_TABLES)
    assert (
        scalar(wh, "SELECT quanity FROM staging.order_items_latest WHERE order_item_id = 5000")
        == 42
    )


def test_an_old_open_transaction_holds_the_cursor_back(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(source, "LONG_TRANSACTION", dt.timedelta(seconds=1))
    fill(db_url, orders=5)
    with psycopg.connect(db_url) as idle:
        idle.execute("SELECT 1")
        opened = idle.execute("SELECT now()::timestamp(3)").fetchone()
        assert opened is not None
        time.sleep(1.2)
        result = sync(settings(db_url, db_url), tables=["orders"])
    assert result.tables["orders"].cursor < opened[0]
    assert result.tables["orders"].cursor > opened[0] - dt.timedelta(seconds=2)
    assert "the cursor cannot pass its start" in caplog.text


def test_hidden_transactions_fall_back_to_a_lag(
    make_role: RoleFactory, source_url: str, warehouse_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A source role without pg_read_all_stats cannot see other roles' xact_start."""
    role = make_role(
        "acme_sync_lowpriv"
    )  # with a password: the suite runs on servers that require one
    fill(source_url, orders=5, order_items=5, customers=1, products=1)
    execute(
        source_url,
        f"GRANT USAGE ON SCHEMA operations TO {role.name}; GRANT SELECT ON ALL TABLES IN SCHEMA "
        f"operations TO {role.name}",
    )
    low = role.url(source_url)
    clock = scalar(source_url, "SELECT now()::timestamp(3)")
    result = sync(settings(low, warehouse_url), fallback_lag=dt.timedelta(hours=1))
    cursor = result.tables["orders"].cursor
    assert clock - dt.timedelta(hours=1, seconds=2) < cursor < clock - dt.timedelta(hours=1)
    assert "grant pg_read_all_stats" in caplog.text
    assert_converged(source_url, warehouse_url)


def test_the_hidden_transactions_warning_is_per_sync_or_per_run(
    make_role: RoleFactory, source_url: str, warehouse_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No process-wide state: each sync warns (whatever synced before in this process), and
    one ``acme-mv run`` (one sync step) warns once for all its cycles."""
    role = make_role("acme_sync_warnonce")
    fill(source_url, orders=3, order_items=3, customers=1, products=1)
    execute(
        source_url,
        f"GRANT USAGE ON SCHEMA operations TO {role.name}; "
        f"GRANT SELECT ON ALL TABLES IN SCHEMA operations TO {role.name}",
    )
    low = settings(role.url(source_url), warehouse_url)

    def warnings() -> int:
        return sum("grant pg_read_all_stats" in r.getMessage() for r in caplog.records)

    for _ in range(2):
        caplog.clear()
        sync(low)
        assert warnings() == 1
    caplog.clear()
    step = runner.default_sync_step(low)
    for full in (False, False, True):
        step(full)
    assert warnings() == 1


def test_null_updated_at_rows_are_reread_without_duplicates(db_url: str) -> None:
    fill(db_url, orders=30)
    execute(db_url, "UPDATE operations.orders SET updated_at = NULL WHERE order_id <= 4")
    for _ in range(3):
        result = sync(settings(db_url, db_url), tables=["orders"])
    assert result.tables["orders"].rows_read >= 4
    assert result.tables["orders"].rows_new == 0
    assert set(versions(db_url, "orders").values()) == {1}
    execute(
        db_url,
        "UPDATE operations.orders SET status = 'CHANGED', updated_at = NULL WHERE order_id = 2",
    )
    result = sync(settings(db_url, db_url), tables=["orders"])
    assert result.tables["orders"].rows_new == 1
    assert versions(db_url, "orders")[2] == 2
    assert_converged(db_url, db_url, ("orders",))


def test_unchanged_rows_at_the_boundary_add_no_versions(db_url: str) -> None:
    fill(db_url, orders=30, order_items=30)
    first = sync(settings(db_url, db_url))
    # pin some rows right on the cursor: every later sync re-reads them
    execute(
        db_url,
        "UPDATE operations.orders SET updated_at = %s WHERE order_id <= 3",
        (first.tables["orders"].cursor,),
    )
    for _ in range(3):
        sync(settings(db_url, db_url))
    counts = versions(db_url, "orders")
    assert counts[1] == 2  # the update (a new updated_at) is a new version, once
    assert max(counts.values()) == 2
    assert set(versions(db_url, "order_items").values()) == {1}


def test_full_compares_everything_and_tombstones_hard_deletes(urls: tuple[str, str]) -> None:
    src, wh = urls
    fill(src, orders=40, order_items=40)
    sync(settings(src, wh))
    execute(
        src,
        "UPDATE operations.orders SET status = 'X', updated_at = "
        "CURRENT_TIMESTAMP(3) WHERE order_id <= 10",
    )
    sync(settings(src, wh))
    execute(src, "DELETE FROM operations.orders WHERE order_id IN (20, 21)")
    execute(src, "DELETE FROM operations.order_items WHERE order_item_id = 5")
    # a change the cursor cannot see (updated_at left alone): --full compares every row
    execute(
        src,
        "UPDATE operations.orders SET status = 'HIDDEN', updated_at = "
        "'2000-01-01' WHERE order_id = 30",
    )
    sync(settings(src, wh))
    assert 20 in versions(wh, "orders")  # a hard delete is out of the cursor's reach
    before = versions(wh, "orders")
    result = sync(settings(src, wh), full=True, tables=["orders", "order_items"])
    assert result.tables["orders"].mode == "full"
    assert (result.tables["orders"].rows_new, result.tables["orders"].rows_deleted) == (1, 2)
    assert (result.tables["order_items"].rows_new, result.tables["order_items"].rows_deleted) == (
        0,
        1,
    )
    after = versions(wh, "orders")
    # nothing re-copied: one new version for the hidden change, one tombstone per deleted key
    assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {
        20: 1,
        21: 1,
        30: 1,
    }
    assert scalar(
        wh, "SELECT array_agg(order_id ORDER BY order_id) FROM staging.orders_latest WHERE _deleted"
    ) == [20, 21]
    assert (
        scalar(
            wh,
            "SELECT count(*) FROM staging.orders_latest WHERE _deleted AND "
            "(order_date, delivery_date, customer_id, status, updated_at) IS NOT NULL",
        )
        == 0
    )
    assert_converged(src, wh, APPEND_TABLES)
    assert sorted(compared_tables(wh, result.batch_id)) == sorted(APPEND_TABLES)
    # --full again: nothing left to do, the tombstones are not repeated
    again = sync(settings(src, wh), full=True, tables=["orders"])
    assert (again.tables["orders"].rows_new, again.tables["orders"].rows_deleted) == (0, 0)
    # incremental again after --full; a key deleted then re-inserted comes back live
    execute(
        src,
        "UPDATE operations.orders SET status = 'Y', updated_at = "
        "CURRENT_TIMESTAMP(3) WHERE order_id = 1",
    )
    execute(src, "INSERT INTO operations.orders (order_id, status) VALUES (20, 'PENDING')")
    assert sync(settings(src, wh)).tables["orders"].rows_new == 2
    assert_converged(src, wh)


def test_mirrors_follow_inserts_updates_and_deletes(urls: tuple[str, str]) -> None:
    src, wh = urls
    fill(src, customers=20, products=20)
    sync(settings(src, wh), tables=["customers", "products"])
    execute(src, "DELETE FROM operations.customers WHERE customer_id IN (1, 2)")
    execute(src, "UPDATE operations.customers SET is_active = NOT is_active WHERE customer_id = 3")
    execute(
        src, "UPDATE operations.products SET unity_price = unity_price + 1 WHERE product_id <= 4"
    )
    fill(src, products=1)
    result = sync(settings(src, wh), tables=["customers", "products"])
    assert (result.tables["customers"].rows_new, result.tables["customers"].rows_deleted) == (1, 2)
    assert (result.tables["products"].rows_new, result.tables["products"].rows_deleted) == (5, 0)
    assert_converged(src, wh, ("customers", "products"))
    assert result.tables["products"].rows_read == 21


def test_table_option_syncs_only_those_tables(db_url: str) -> None:
    fill(db_url, orders=5, order_items=5)
    sync(settings(db_url, db_url), tables=["order_items"])
    assert scalar(db_url, "SELECT array_agg(table_name) FROM staging.sync_state") == ["order_items"]
    assert scalar(db_url, "SELECT count(*) FROM staging.orders") == 0
    assert scalar(db_url, "SELECT tables FROM staging.sync_batches") == ["order_items"]


def test_unknown_table_is_rejected(db_url: str) -> None:
    with pytest.raises(ConfigError, match="'shipments'") as info:
        sync(settings(db_url, db_url), tables=["shipments"])
    assert info.value.setting == "tables"


@pytest.mark.parametrize("rows_before_error", [0, 50_000])
def test_a_failing_source_copy_raises_psycopgs_error(db_url: str, rows_before_error: int) -> None:
    statement = psycopg.sql.SQL(
        "COPY (SELECT CASE WHEN g <= {n} THEN g ELSE 1 / (g - g) END FROM generate_series(1, {n} + "
        "1) g) TO STDOUT (FORMAT BINARY)"
    ).format(n=rows_before_error)
    with psycopg.connect(db_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            list(copy_out_chunks(conn, statement))
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is usable afterwards
        chunks = list(
            copy_out_chunks(conn, psycopg.sql.SQL("COPY (SELECT generate_series(1, 3)) TO STDOUT"))
        )
        assert b"".join(chunks) == b"1\n2\n3\n"


def test_an_interrupted_stream_stops_the_source_copy(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure on the warehouse side (here: the progress hook) cancels the source COPY cleanly."""

    def interrupt(nbytes: int) -> None:
        raise KeyboardInterrupt

    with psycopg.connect(db_url) as src, psycopg.connect(db_url) as dst:
        dst.execute("CREATE TEMP TABLE t (a text)")
        with pytest.raises(KeyboardInterrupt), src.transaction():
            stream(
                src,
                psycopg.sql.SQL("SELECT repeat('x', 100) FROM generate_series(1, 100000)"),
                dst,
                psycopg.sql.SQL("t (a)"),
                interrupt,
            )
        assert src.execute("SELECT 1").fetchone() == (1,)
    assert "error ignored in rollback" not in caplog.text


#: a child process: a COPY waiting for a locked table in one thread, the main thread meanwhile
#: seeing it wait in pg_locks and releasing the lock (a frozen GIL would hang the child instead)
_WAITING_COPY = """
import sys, threading, time, psycopg
from psycopg import sql
from acme_mv.staging.copy import copy_out_chunks

url = sys.argv[1]
holder = psycopg.connect(url)
holder.execute("LOCK TABLE operations.orders IN ACCESS EXCLUSIVE MODE")
reader = psycopg.connect(url, autocommit=True)
pid = reader.info.backend_pid
out = []
query = sql.SQL("COPY (SELECT order_id FROM operations.orders) TO STDOUT")
copier = threading.Thread(target=lambda: out.extend(copy_out_chunks(reader, query)))
copier.start()
with psycopg.connect(url, autocommit=True) as monitor:
    while not monitor.execute(
        "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", (pid,)
    ).fetchone()[0]:
        time.sleep(0.02)
holder.rollback()
copier.join()
print(b"".join(out).decode().split())
"""


def test_a_waiting_source_copy_lets_other_threads_run(db_url: str) -> None:
    """copy_out_chunks waits for the server outside the GIL (``run`` serves metrics from
    a thread)."""
    fill(db_url, orders=3)
    child = subprocess.run(
        [sys.executable, "-c", _WAITING_COPY, db_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "['1', '2', '3']"


@pytest.mark.parametrize(
    ("server_kb", "want_kb"),
    [(64 * 1024, INDEX_BUILD_MEMORY_KB), (4 * 1024 * 1024, 4 * 1024 * 1024)],
)
def test_index_builds_get_more_sort_memory_only_for_the_transaction(
    db_url: str, server_kb: int, want_kb: int
) -> None:
    """Raised to INDEX_BUILD_MEMORY_KB for the sync transaction when lower; never lowered."""
    with psycopg.connect(db_url) as conn:
        conn.execute(
            psycopg.sql.SQL("SET maintenance_work_mem = {}").format(
                psycopg.sql.Literal(f"{server_kb}kB")
            )
        )
        conn.commit()
        with conn.transaction():
            _raise_index_memory(conn)
            row = conn.execute(
                "SELECT setting::bigint FROM pg_settings WHERE name = 'maintenance_work_mem'"
            ).fetchone()
            assert row == (want_kb,)
        row = conn.execute(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'maintenance_work_mem'"
        ).fetchone()
        assert row == (server_kb,)


def test_an_incremental_sync_scans_an_unindexed_source_table_once(
    urls: tuple[str, str],
) -> None:
    """The production DDL has no updated_at index: each sync reads such a table with one
    sequential scan (its rows since the cursor), not a second one for max(updated_at)."""
    src, wh = urls
    fill(src, orders=200)
    with psycopg.connect(src, autocommit=True) as conn:
        for name in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'operations' "
            "AND tablename = 'orders' AND indexdef LIKE '%(updated_at)%'"
        ).fetchall():
            conn.execute(
                psycopg.sql.SQL("DROP INDEX operations.{}").format(psycopg.sql.Identifier(name[0]))
            )
    sync(settings(src, wh), tables=["orders"])
    fill(src, orders=5)

    def seq_scans(conn: psycopg.Connection[TupleRow]) -> int:
        rows = settled(
            conn,
            "SELECT seq_scan FROM pg_stat_user_tables "
            "WHERE schemaname = 'operations' AND relname = 'orders'",
        )
        return int(str(rows[0][0]))

    with psycopg.connect(src, autocommit=True) as conn:
        before = seq_scans(conn)
        result = sync(settings(src, wh), tables=["orders"])
        assert result.tables["orders"].rows_new == 5
        assert seq_scans(conn) - before == 1
