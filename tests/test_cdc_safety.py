"""Slot safety: an unbounded max_slot_wal_keep_size is warned about, a slot at risk fails the
health checks (exit 5) naming the command that recovers, ``run --cdc`` exports the slot's
retained WAL and lag, a failover slot on PostgreSQL 17+, and the run loop's failure count
reset by a heartbeat."""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from acme_mv import cdc
from acme_mv.cdc.pgoutput import lsn_from_str
from acme_mv.cdc.slot import Status
from tests.support.cdc_helpers import Cdc, restart_waits
from tests.support.cli_runner import run
from tests.support.database import DatabaseFactory
from tests.support.sync_helpers import execute, fill, scalar


@pytest.fixture
def world(make_db: DatabaseFactory, slot_name: str, cli_env: Callable[..., None]) -> Cdc:
    w = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    cli_env(database_url=w.wh, source_url=w.src)
    fill(w.src, orders=30, order_items=60, customers=5, products=5)
    return w


def _status(**fields: object) -> Status:
    base: dict[str, object] = {
        "slot": "s",
        "publication": "p",
        "exists": True,
        "active_pid": None,
        "wal_status": "reserved",
        "current_lsn": "0/10",
        "confirmed_flush_lsn": "0/10",
        "restart_lsn": "0/10",
        "lag_bytes": 0,
        "retained_bytes": 100,
        "saved_lsn": "0/10",
        "last_batch_id": 1,
        "last_commit_at": None,
        "caught_up_at": None,
        "lag_s": 0.0,
    }
    base.update(fields)
    return Status(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "limit", "says"),
    [
        pytest.param({"wal_status": "lost"}, 10**9, "acme-mv cdc drop, then", id="lost"),
        pytest.param({"wal_status": "unreserved"}, 10**9, "start acme-mv cdc run", id="unreserved"),
        pytest.param({"retained_bytes": 101}, 100, "more than the limit 100", id="retains_more"),
    ],
)
def test_a_slot_at_risk_fails_naming_the_recovery(
    fields: dict[str, object], limit: int, says: str
) -> None:
    with pytest.raises(cdc.SlotAtRisk, match=re.escape(says)) as caught:
        cdc.check_health(_status(**fields), max_retained=limit)
    assert caught.value.exit_code == 5 and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="reserved"),
        pytest.param({"wal_status": "extended"}, id="extended"),
        pytest.param({"retained_bytes": 100}, id="at_the_limit"),
        pytest.param({"exists": False, "wal_status": None, "retained_bytes": None}, id="no_slot"),
    ],
)
def test_a_healthy_slot_passes(fields: dict[str, object]) -> None:
    cdc.check_health(_status(**fields), max_retained=100)


def test_setup_warns_once_about_an_unbounded_max_slot_wal_keep_size(
    world: Cdc, caplog: pytest.LogCaptureFixture
) -> None:
    assert scalar(world.src, "SELECT current_setting('max_slot_wal_keep_size')") == "-1"
    res = run("cdc", "setup", "--slot", world.slot, "--publication", world.slot)
    assert res.exit_code == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if "max_slot_wal_keep_size" in line]
    assert len(lines) == 1, res.stderr
    assert "WARNING" in lines[0] and "ALTER SYSTEM SET max_slot_wal_keep_size" in lines[0]


def test_status_exits_5_when_the_slot_retains_more_than_max_retained(world: Cdc) -> None:
    world.setup()
    execute(world.src, "CREATE TABLE public.noise (pad text)")
    execute(
        world.src, "INSERT INTO public.noise SELECT repeat('x', 500) FROM generate_series(1, 500)"
    )
    res = run("cdc", "status", "--slot", world.slot)
    assert res.exit_code == 0, res.stderr  # the default limit (10GB) is far away
    res = run("cdc", "status", "--slot", world.slot, "--max-retained", "1kB")
    assert res.exit_code == 5, res.stderr
    assert "WAL retained" in res.stdout  # the table is printed first
    assert "more than the limit 1,024 (--max-retained)" in res.stderr
    assert "acme-mv cdc run" in res.stderr
    res = run("cdc", "status", "--slot", world.slot, "--json", "--max-retained", "1kB")
    assert res.exit_code == 5 and '"retained_bytes"' in res.stdout
    res = run("cdc", "status", "--slot", world.slot, "--max-retained", "lots")
    assert res.exit_code == 2 and "--max-retained" in res.stderr
    # the health check of the cursor mode's status, with change capture set up
    world.catch_up()
    res = run("status", "--max-age", "1h", "--max-retained", "1kB")
    assert res.exit_code == 5, res.stderr
    assert f"The replication slot {world.slot!r} retains" in res.stderr
    res = run("status", "--max-age", "1h")
    assert res.exit_code == 0, res.stderr


def test_a_failover_slot_on_17_and_a_usage_error_before(world: Cdc) -> None:
    version = int(scalar(world.src, "SELECT current_setting('server_version_num')::int"))
    res = run("cdc", "setup", "--slot", world.slot, "--publication", world.slot, "--failover")
    if version < 170000:
        assert res.exit_code == 2, res.stderr
        assert "--failover needs PostgreSQL 17 or later" in res.stderr
        assert "\n" not in res.stderr.strip()
        assert not scalar(
            world.src,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
            (world.slot,),
        )
        return
    assert res.exit_code == 0, res.stderr
    assert scalar(
        world.src, "SELECT failover FROM pg_replication_slots WHERE slot_name = %s", (world.slot,)
    )
    world.catch_up()  # it streams like any slot
    world.assert_reports_true()
    # an existing slot becomes a failover slot without a re-snapshot
    cdc.drop(world.settings, slot=world.slot)
    world.setup()
    assert not scalar(
        world.src, "SELECT failover FROM pg_replication_slots WHERE slot_name = %s", (world.slot,)
    )
    batches = scalar(world.wh, "SELECT count(*) FROM staging.sync_batches")
    res = run("cdc", "setup", "--slot", world.slot, "--publication", world.slot, "--failover")
    assert res.exit_code == 0, res.stderr
    assert scalar(
        world.src, "SELECT failover FROM pg_replication_slots WHERE slot_name = %s", (world.slot,)
    )
    assert scalar(world.wh, "SELECT count(*) FROM staging.sync_batches") == batches


def _after(at: dt.datetime | None, than: dt.datetime | None) -> bool:
    return at is not None and (than is None or at > than)


def _caught_up_at(world: Cdc) -> dt.datetime:
    value = scalar(
        world.wh, "SELECT caught_up_at FROM staging.cdc_state WHERE slot_name = %s", (world.slot,)
    )
    assert isinstance(value, dt.datetime)
    return value


def test_run_cdc_resets_its_backoff_after_a_heartbeat_and_exports_the_slot(
    make_db: DatabaseFactory, slot_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No change arrives: each round ends the stream's warehouse sessions, the heartbeat fails,
    the stream restarts, and a heartbeat succeeds. The next failure waits ``first_s`` again
    (a heartbeat is a success), not twice as long. The metrics show the slot's WAL."""
    from acme_mv.run import loop as runner
    from acme_mv.run.metrics import Metrics

    world = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    fill(world.src, orders=10, order_items=20, customers=3, products=3)
    world.setup()
    metrics = Metrics()
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runner.run_cdc(
                world.settings,
                slot=world.slot,
                stop=stop,
                retry=runner.RetryPolicy(first_s=0.3),
                metrics=metrics,
                heartbeat_s=0.2,
            )
        except BaseException as exc:
            errors.append(exc)

    def failures() -> int:
        return sum("change capture failed" in r.getMessage() for r in caplog.records)

    def wait_for(what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 60
        while not done():
            assert not errors, errors
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    thread = threading.Thread(target=target)
    setup_at = _caught_up_at(world)  # cdc setup stamps it too: the stream's own comes later
    with caplog.at_level(logging.INFO, logger="acme_mv"):
        thread.start()
        try:
            wait_for(
                "a first heartbeat of the stream",
                lambda: _after(_caught_up_at(world), setup_at),
            )
            for _ in range(3):
                seen = failures()
                execute(
                    world.wh,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()",
                )
                wait_for("a failure", lambda: failures() > seen)  # noqa: B023
                before = _caught_up_at(world)
                wait_for("a heartbeat after the restart", lambda: _caught_up_at(world) > before)  # noqa: B023
        finally:
            stop.set()
            thread.join(60)
    assert not errors, errors
    waits, failed = restart_waits(caplog.records)
    assert len(failed) >= 3 and waits == [0.3] * len(failed), failed
    retained = metrics.registry.get_sample_value("acme_mv_cdc_slot_retained_bytes")
    lag = metrics.registry.get_sample_value("acme_mv_cdc_slot_lag_bytes")
    assert retained is not None and retained >= 0 and retained == retained  # not NaN
    assert lag is not None and lag >= 0


def test_a_source_updated_at_of_infinity_does_not_break_a_cursor_sync(db_url: str) -> None:
    """The sync records the source's max(updated_at): 'infinity' is recorded as such."""
    from acme_mv import sync
    from acme_mv.config import Settings

    fill(db_url, orders=5, order_items=5, customers=2, products=2)
    execute(db_url, "UPDATE operations.orders SET updated_at = 'infinity' WHERE order_id = 1")
    sync.sync(Settings(database_url=db_url))
    assert (
        scalar(
            db_url,
            "SELECT last_source_max_updated_at::text FROM staging.sync_state "
            "WHERE table_name = 'orders'",
        )
        == "infinity"
    )


def test_a_data_error_python_raises_is_not_retried() -> None:
    """psycopg's DataError without SQLSTATE (a value Python cannot load, e.g. a timestamp out
    of datetime's range) fails the same way every time."""
    from acme_mv.run.loop import is_transient

    assert not is_transient(psycopg.DataError("timestamp too large (after year 10K): 'infinity'"))
    assert is_transient(psycopg.OperationalError("server closed the connection unexpectedly"))


def test_a_slot_confirmed_ahead_of_the_warehouse_loses_nothing(world: Cdc) -> None:
    """The slot's confirmed position can pass the warehouse's saved one (psycopg2 answers a
    keepalive with the newest position once all it received was confirmed): the stream starts
    from the later one and nothing the warehouse lacks was between them."""
    world.setup()
    world.catch_up()
    saved = world.saved_lsn()
    execute(world.src, "CREATE TABLE public.noise (pad text)")
    execute(world.src, "INSERT INTO public.noise SELECT 'x' FROM generate_series(1, 100)")
    execute(
        world.src,
        "SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn())",
        (world.slot,),
    )
    confirmed = scalar(
        world.src,
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        (world.slot,),
    )
    assert world.saved_lsn() == saved < lsn_from_str(str(confirmed))
    execute(world.src, "UPDATE operations.orders SET status = 'AHEAD' WHERE order_id <= 3")
    execute(world.src, "DELETE FROM operations.order_items WHERE order_item_id <= 4")
    world.catch_up()
    world.assert_staging_equals_source()
    world.assert_reports_true()
