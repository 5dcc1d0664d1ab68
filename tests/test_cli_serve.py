"""``acme-mv serve`` and ``acme-mv demo --serve`` as processes: they listen, answer, stop cleanly on
SIGTERM/SIGINT (exit 0), and refuse bad settings with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.cli_runner import run
from tests.support.delivery_data import EXPECTED, load_and_refresh
from tests.support.roles import PASSWORD
from tests.support.smtp_server import free_port

#: generous: the loop ends as soon as the server answers (never a timing assertion)
START_S = 120


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ACME_MV_") or k == "ACME_MV_CACHE_DIR"
    }
    env.update(extra)
    return env


def _wait_for(url: str, proc: subprocess.Popen[str]) -> dict[str, Any]:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {proc.communicate()[1]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as res:
                doc = json.loads(res.read())
                assert isinstance(doc, dict)
                return doc
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def _stop(proc: subprocess.Popen[str], sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_serve_answers_and_stops_on_sigterm(db_url: str) -> None:
    load_and_refresh(db_url)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "acme_mv", "serve", "--port", str(port)],
        env=_env(ACME_MV_READER_URL=db_url),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        doc = _wait_for(f"http://127.0.0.1:{port}/api/data", proc)
    finally:
        code, err = _stop(proc, signal.SIGTERM)
    reports = doc["reports"]
    assert isinstance(reports, dict)
    assert reports["top_dates"]["rows"] == [
        r.split(",") for r in EXPECTED["top_dates"].splitlines()[1:]
    ]
    assert code == 0, err
    assert "dashboard on http://127.0.0.1" in err and "Traceback" not in err


def test_serve_refuses_a_bad_reader_url_in_one_line(
    password_role_url: str, cli_env: Callable[..., None]
) -> None:
    cli_env()
    wrong = password_role_url.replace(PASSWORD, "not-the-password")
    os.environ["ACME_MV_READER_URL"] = wrong
    try:
        res = run("serve", "--port", str(free_port()))
    finally:
        del os.environ["ACME_MV_READER_URL"]
    assert res.exit_code == 1
    assert (
        "Cannot connect to the warehouse" in res.stderr
        and "password authentication failed" in res.stderr
    )
    assert "not-the-password" not in res.stderr and "Traceback" not in res.stderr


def test_serve_refuses_a_taken_port(db_url: str) -> None:
    load_and_refresh(db_url)
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "acme_mv", "serve", "--port", str(port)],
            env=_env(ACME_MV_DATABASE_URL=db_url),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert f"The dashboard cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert [line for line in done.stderr.splitlines() if "Error" in line] == [
        done.stderr.strip().splitlines()[-1]
    ]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_demo_serve_opens_the_dashboard_on_the_demo_data(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "exports"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "acme_mv",
            "demo",
            "--orders",
            "300",
            "--simulate",
            "0",
            "--output-dir",
            str(out),
            "--serve",
            "--port",
            str(port),
        ],
        env=_env(ACME_MV_CACHE_DIR=str(tmp_path / "cache")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        doc = _wait_for(f"http://127.0.0.1:{port}/api/data", proc)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/reports/open_orders.csv", timeout=30
        ) as res:
            served = res.read()
    finally:
        code, err = _stop(proc, signal.SIGINT)
    assert code == 0, err
    (exported,) = out.glob("open_orders_result_*.csv")
    assert served == exported.read_bytes()
    assert set(doc["reports"]) == set(EXPECTED)
    assert f"dashboard: http://127.0.0.1:{port}/" in err


def test_demo_live_keeps_writing_syncing_and_refreshing(db_url: str) -> None:
    """What `demo --serve --simulate N` runs behind the page: the simulator and the runner."""
    from acme_mv.config import Settings
    from acme_mv.demo import live

    settings = Settings(database_url=db_url)

    def state() -> tuple[int, int]:
        with psycopg.connect(db_url) as conn:
            row = conn.execute(
                "SELECT coalesce(refreshed_batch_id, 0), (SELECT count(*) FROM "
                "staging.orders) FROM analytics.snapshot"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    assert state() == (0, 0)
    with live(settings, rate=200, interval=0.2):
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline and not (state()[0] >= 3 and state()[1] > 0):
            time.sleep(0.2)
    batch, orders = state()
    assert batch >= 3 and orders > 0  # several cycles ran, and they saw the simulator's orders
