"""``acme-mv sample init|load|simulate`` through the real entry point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from acme_mv.config import DURATION_GRAMMAR
from tests.support.cli_runner import Result, run

UNREACHABLE = "postgresql://nobody:secretpw@127.0.0.1:1/x"


def one(url: str, query: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def orders(url: str) -> int:
    return int(one(url, "SELECT count(*) FROM operations.orders"))


def has_operations(url: str) -> bool:
    return bool(one(url, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'operations')"))


def assert_one_line_error(res: Result, *needles: str) -> None:
    assert res.exit_code == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("Error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in res.stderr


def test_init_creates_the_schema_on_the_source_only(
    make_db: Callable[[str], str], cli_env: Callable[..., None]
) -> None:
    source, warehouse = make_db("empty"), make_db("warehouse")
    cli_env(database_url=warehouse, source_url=source)
    res = run("sample", "init")
    assert res.exit_code == 0, res.stderr
    assert "created the operations schema" in res.stderr
    assert has_operations(source) and not has_operations(warehouse)

    again = run("sample", "init")
    assert_one_line_error(again, "operations already exists", "--replace")

    replaced = run("sample", "init", "--replace")
    assert replaced.exit_code == 0, replaced.stderr


def test_the_source_falls_back_to_the_warehouse_url(
    empty_url: str, cli_env: Callable[..., None]
) -> None:
    cli_env(database_url=empty_url)
    res = run("sample", "load", "--orders", "40")
    assert res.exit_code == 0, res.stderr
    assert orders(empty_url) == 40


def test_load_refuse_append_replace(
    source_url: str, warehouse_url: str, cli_env: Callable[..., None]
) -> None:
    cli_env(database_url=warehouse_url, source_url=source_url)
    first = run("sample", "load", "--orders", "300", "--days", "10", "--seed", "3")
    assert first.exit_code == 0, first.stderr
    assert "loaded 15 customers, 20 products, 300 orders" in first.stderr
    assert " s" in first.stderr and first.stdout == ""
    assert orders(source_url) == 300

    refused = run("sample", "load", "--orders", "10")
    assert_one_line_error(refused, "operations already holds 300 orders; use --append or --replace")

    assert run("sample", "load", "-n", "100", "--append").exit_code == 0
    assert orders(source_url) == 400
    assert run("sample", "load", "-n", "50", "--replace").exit_code == 0
    assert orders(source_url) == 50

    both = run("sample", "load", "-n", "50", "--append", "--replace")
    assert both.exit_code == 2
    assert "exclude each other" in both.stderr
    assert orders(source_url) == 50


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--orders", "-5"], "--orders must be between 0 and 50,000,000"),
        (["--orders", "60000000"], "--orders must be between 0 and 50,000,000"),
        (["--orders", "10", "--days", "0"], "--days must be between 1"),
    ],
)
def test_load_rejects_bad_numbers(
    source_url: str, cli_env: Callable[..., None], args: list[str], needle: str
) -> None:
    cli_env(source_url=source_url)
    assert_one_line_error(run("sample", "load", *args), needle)
    assert orders(source_url) == 0


def test_simulate_runs_and_summarizes(source_url: str, cli_env: Callable[..., None]) -> None:
    cli_env(source_url=source_url)
    assert run("sample", "load", "--orders", "100", "--days", "3").exit_code == 0
    before = orders(source_url)
    res = run("sample", "simulate", "--rate", "80", "--duration", "1.5s", "--seed", "9")
    assert res.exit_code == 0, res.stderr
    assert "simulated" in res.stderr and "row changes in" in res.stderr
    assert "order items +" in res.stderr
    assert orders(source_url) >= before


@pytest.mark.parametrize("rate", ["0", "-5", "20000", "nan"])
def test_simulate_rejects_bad_rates(
    source_url: str, cli_env: Callable[..., None], rate: str
) -> None:
    cli_env(source_url=source_url)
    assert_one_line_error(
        run("sample", "simulate", f"--rate={rate}", "--duration", "1"), "--rate must be > 0"
    )


@pytest.mark.parametrize("duration", ["5 minutes", "-3", "1 week"])
def test_simulate_rejects_bad_durations(
    source_url: str, cli_env: Callable[..., None], duration: str
) -> None:
    cli_env(source_url=source_url)
    res = run("sample", "simulate", f"--duration={duration}")
    assert res.exit_code == 2, res.stderr  # a usage error, as for every duration option
    assert res.stderr.strip().splitlines() == [
        f"Error: --duration: {duration!r} is not a duration such as {DURATION_GRAMMAR}"
    ]


@pytest.mark.parametrize(
    "args",
    [["init"], ["load", "--orders", "10"], ["simulate", "--rate", "10", "--duration", "1"]],
    ids=["init", "load", "simulate"],
)
def test_unreachable_source_is_one_line_without_the_password(
    cli_env: Callable[..., None], args: list[str]
) -> None:
    cli_env(database_url="postgresql://warehouse@127.0.0.1:1/w", source_url=UNREACHABLE)
    res = run("sample", *args)
    assert_one_line_error(res, "Cannot connect to the source")
    assert "secretpw" not in res.stderr + res.stdout


@pytest.mark.slow
def test_ctrl_c_stops_simulate_cleanly_with_a_summary(source_url: str) -> None:
    env = {
        **os.environ,
        "ACME_MV_SOURCE_URL": source_url,
        "ACME_MV_DATABASE_URL": source_url,
        "COLUMNS": "200",
        # a SIGABRT makes it print every thread's stack: what it was doing if it hangs
        "PYTHONFAULTHANDLER": "1",
    }
    # Ctrl-C reaches a terminal's foreground job; a job that a script or a CI runner started in
    # the background has SIGINT ignored, and every process it starts inherits that, this test's
    # child too. The child gets Python's own SIGINT handler, as in a terminal
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "acme_mv", "sample", "simulate", "--rate", "30"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        deadline = time.monotonic() + 60
        while orders(source_url) == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _, stacks = proc.communicate(timeout=30)
            pytest.fail(f"simulate did not stop within 30 s of Ctrl-C:\n{stacks}")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped by Ctrl-C after" in " ".join(err.split()), err
    assert "Traceback" not in err
    assert orders(source_url) > 0
