"""``acme-mv run --cdc``: the run loop fed by change capture, restarted after a lost connection."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.cdc_helpers import Cdc, restart_waits
from tests.support.cli_runner import run as cli_run
from tests.support.database import DatabaseFactory
from tests.support.reports_oracle import actual, expected
from tests.support.smtp_server import SmtpServer
from tests.support.sync_helpers import execute, fill, scalar

#: a safety net only: the loop is expected to converge in a second or two
CONVERGE_TIMEOUT_S = 120


def _converged(world: Cdc) -> bool:
    with psycopg.connect(world.src) as src, psycopg.connect(world.wh) as wh:
        want = expected(src)
        return bool(actual(wh) == {name: want[name] for name in want})


def _wait_converged(world: Cdc, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    while not _converged(world):
        assert proc.poll() is None, "run --cdc exited"
        assert time.monotonic() < deadline, "run --cdc did not converge"
        time.sleep(0.2)


def _env(world: Cdc, **extra: str) -> dict[str, str]:
    """This process's environment pointed at ``world``, plain logs, plus ``extra``."""
    return {
        **os.environ,
        "ACME_MV_DATABASE_URL": world.wh,
        "ACME_MV_SOURCE_URL": world.src,
        "ACME_MV_LOG_FORMAT": "plain",
        **extra,
    }


def test_run_cdc_streams_deletes_into_the_reports_and_survives_a_lost_walsender(
    make_db: DatabaseFactory, slot_name: str, tmp_path: Path
) -> None:
    world = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    fill(world.src, orders=40, order_items=120, customers=5, products=5)
    world.setup()
    env = _env(world)
    log = tmp_path / "run.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "acme_mv",
                "run",
                "--cdc",
                "--slot",
                world.slot,
                "--max-backoff",
                "1s",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            env=env,
        )
        try:
            # a delete, an update and an insert reach the reports with no sync at all
            execute(world.src, "DELETE FROM operations.orders WHERE order_id IN (1, 2, 3)")
            execute(world.src, "UPDATE operations.orders SET status = 'PENDING' WHERE order_id = 4")
            execute(
                world.src,
                "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
                "('2026-12-24', 1, 'PENDING')",
            )
            _wait_converged(world, proc)
            # the source ends the walsender (as a restart would): the loop logs it and streams again
            execute(
                world.src,
                "SELECT pg_terminate_backend(active_pid) FROM "
                "pg_replication_slots WHERE slot_name = %s",
                (world.slot,),
            )
            execute(world.src, "DELETE FROM operations.order_items WHERE order_item_id <= 10")
            execute(
                world.src, "UPDATE operations.orders SET status = 'COMPLETED' WHERE order_id = 5"
            )
            _wait_converged(world, proc)
            world.assert_staging_equals_source()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert "Traceback" not in text
    assert "change capture stopped cleanly" in text


def test_run_cdc_sends_the_daily_mail_set_in_the_environment(
    make_db: DatabaseFactory, slot_name: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    """``run --cdc`` with the daily mail set only in the environment (compose's mail.env):
    the mail goes out while the stream runs, with no cycle to hang it on; SIGTERM ends both."""
    world = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    fill(world.src, orders=20, order_items=40, customers=3, products=3)
    world.setup()
    # with the smtp fixture's ACME_MV_SMTP_URL, password, CA file and sender
    env = _env(world, ACME_MV_MAIL_AT="00:00", ACME_MV_MAIL_TO="lead@example.com")
    log = tmp_path / "run.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "acme_mv", "run", "--cdc", "--slot", world.slot],
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            env=env,
        )
        try:
            deadline = time.monotonic() + CONVERGE_TIMEOUT_S
            while not smtp.inbox.messages:
                assert proc.poll() is None, f"run --cdc exited: {log.read_text()}"
                assert time.monotonic() < deadline, f"no mail: {log.read_text()}"
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert len(smtp.inbox.messages) == 1
    assert smtp.inbox.envelopes[0][1] == ["lead@example.com"]
    with psycopg.connect(world.wh) as conn:
        sent = conn.execute("SELECT count(*) FROM acme_mv.mail_sends WHERE sent_at IS NOT NULL")
        assert sent.fetchone() == (1,)
    text = log.read_text()
    assert "Traceback" not in text
    assert "mailing the reports to lead@example.com daily after 00:00" in text
    assert "scheduled job failed" not in text  # it waited for the stream's first refresh


def test_run_cdc_takes_the_stream_options(make_db: DatabaseFactory, slot_name: str) -> None:
    """``run --cdc --batch-rows 1``: each source transaction is a batch of its own. Three
    quick transactions make one batch with the defaults (checked by leaving the option out
    of the call to the stream: 1 batch); with a row limit of 1 they make three."""
    from acme_mv.run import loop as runner

    world = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    fill(world.src, orders=20, order_items=40, customers=3, products=3)
    world.setup()
    stop = threading.Event()
    done: list[int] = []
    thread = threading.Thread(
        target=lambda: done.append(
            runner.run_cdc(
                world.settings, slot=world.slot, stop=stop, batch_rows=1, batch_ms=60_000
            )
        )
    )
    thread.start()
    try:
        for order in (1, 2, 3):
            execute(world.src, "DELETE FROM operations.orders WHERE order_id = %s", (order,))
        deadline = time.monotonic() + 30
        while not _converged(world):
            assert thread.is_alive(), "run_cdc ended"
            assert time.monotonic() < deadline, "run_cdc did not converge"
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(60)
    assert done and done[0] >= 3  # one batch per transaction (heartbeats may add more)


def test_the_cli_hands_the_stream_options_to_run_cdc(
    db_url: str, cli_env: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``acme-mv run --cdc --batch-rows/--batch-ms/--refresh-ms`` reach ``run_cdc`` as given;
    left out, they are None (the stream's defaults)."""
    from acme_mv.run import loop as runner

    calls: list[dict[str, Any]] = []

    def fake_run_cdc(settings: object, **kw: Any) -> int:
        calls.append(kw)
        return 0

    monkeypatch.setattr(runner, "run_cdc", fake_run_cdc)
    cli_env(database_url=db_url)
    res = cli_run("run", "--cdc", "--batch-rows", "7", "--batch-ms", "50", "--refresh-ms", "250")
    assert res.exit_code == 0, res.stderr
    res = cli_run("run", "--cdc")
    assert res.exit_code == 0, res.stderr
    got = [{k: c[k] for k in ("batch_rows", "batch_ms", "refresh_ms")} for c in calls]
    assert got == [
        {"batch_rows": 7, "batch_ms": 50.0, "refresh_ms": 250.0},
        {"batch_rows": None, "batch_ms": None, "refresh_ms": None},
    ]


def _last_batch(world: Cdc) -> int:
    return int(
        scalar(
            world.wh,
            "SELECT coalesce(last_batch_id, 0) FROM staging.cdc_state WHERE slot_name = %s",
            (world.slot,),
        )
    )


def test_run_cdc_backoff_starts_again_after_a_batch(
    make_db: DatabaseFactory, slot_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Failures with batches committed between them each wait ``first_s``: the backoff doubles
    over failures in a row only. Each round ends the stream's warehouse sessions, then changes
    the source: the batch fails, the stream restarts and applies it."""
    from acme_mv.run import loop as runner

    world = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    fill(world.src, orders=20, order_items=40, customers=3, products=3)
    world.setup()
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runner.run_cdc(
                world.settings, slot=world.slot, stop=stop, retry=runner.RetryPolicy(first_s=0.3)
            )
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    with caplog.at_level(logging.INFO, logger="acme_mv"):
        thread.start()
        try:
            for round_ in range(4):
                before = _last_batch(world)
                if round_:
                    execute(
                        world.wh,
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    )
                execute(
                    world.src,
                    "UPDATE operations.orders SET status = %s WHERE order_id = 1",
                    (f"R{round_}",),
                )
                deadline = time.monotonic() + 60
                while _last_batch(world) <= before:
                    assert not errors, errors
                    assert time.monotonic() < deadline, "no batch"
                    time.sleep(0.05)
        finally:
            stop.set()
            thread.join(60)
    assert not errors, errors
    waits, failed = restart_waits(caplog.records)
    assert len(failed) >= 3, failed
    assert waits == [0.3] * len(failed), failed
