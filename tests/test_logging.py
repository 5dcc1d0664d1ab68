"""Logs outside a terminal (stderr is a pipe in these subprocesses): one line per record,
ISO 8601 UTC timestamps, no wrapping or padding; ``--log-format json`` for log shippers."""

from __future__ import annotations

import json
import os
import re

import psycopg

from tests.cli_runner import Result, run_subprocess

PLAIN = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) (acme_mv|psycopg|alembic)[\w.]* \S.*\S$"
)


def _env(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACME_MV_")}
    env["ACME_MV_DATABASE_URL"] = db_url
    return env


def _with_an_order(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES ('2026-12-11', 1, 'PENDING')"
        )


def _plain_lines(res: Result) -> list[str]:
    lines = res.stderr.splitlines()
    for line in lines:
        assert PLAIN.match(line), f"not one plain record: {line!r}"
    return lines


def test_plain_lines_one_per_record_with_a_date_and_no_wrapping(db_url: str) -> None:
    _with_an_order(db_url)
    res = run_subprocess("run", "--once", env=_env(db_url))
    assert res.exit_code == 0, res.stderr
    lines = _plain_lines(res)
    cycle = [ln for ln in lines if " INFO acme_mv.run.loop cycle 1: " in ln]
    assert len(cycle) == 1 and len(cycle[0]) > 80  # longer than a terminal: not wrapped
    assert "synced 1 rows" in cycle[0] and "freshness" in cycle[0]
    # the cycle is one line: the refresh's own summary is not a second INFO line
    assert not any(
        "refreshed current views" in ln or "refreshed historic + current views" in ln
        for ln in lines
    )


def test_json_one_object_per_line(db_url: str) -> None:
    _with_an_order(db_url)
    res = run_subprocess("--log-format", "json", "run", "--once", env=_env(db_url))
    assert res.exit_code == 0, res.stderr
    records = [json.loads(line) for line in res.stderr.splitlines()]
    assert records and all(set(r) >= {"ts", "level", "logger", "message"} for r in records)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["ts"]) for r in records)
    assert [r["message"].split(":")[0] for r in records if r["logger"] == "acme_mv.run.loop"] == [
        "cycle 1"
    ]


def test_an_error_is_one_record_too(db_url: str) -> None:
    res = run_subprocess("--log-format", "json", "export", "no_such_report", env=_env(db_url))
    assert res.exit_code == 2
    (record,) = [json.loads(line) for line in res.stderr.splitlines()]
    assert record["level"] == "ERROR" and "Unknown report 'no_such_report'" in record["message"]
    res = run_subprocess("export", "no_such_report", env=_env(db_url))
    (line,) = res.stderr.splitlines()  # plain: the command's error is the bare line scripts expect
    assert line.startswith("Error: Unknown report 'no_such_report'")


def test_verbose_adds_sql_timings_and_per_table_figures(db_url: str) -> None:
    _with_an_order(db_url)
    quiet = run_subprocess("run", "--once", env=_env(db_url))
    res = run_subprocess("run", "--once", "-v", env=_env(db_url))  # -v after the command works too
    assert quiet.exit_code == 0 and res.exit_code == 0, res.stderr
    lines = _plain_lines(res)
    debug = [ln for ln in lines if " DEBUG " in ln]
    assert not any(" DEBUG " in ln for ln in quiet.stderr.splitlines())
    assert any(
        re.search(r' DEBUG acme_mv\.db \d+\.\d{3} s  INSERT INTO "analytics"\."\w+_current"', ln)
        for ln in debug
    ), debug
    assert any(
        re.search(r" DEBUG acme_mv\.run\.loop orders: (initial|incremental), \d+ rows read", ln)
        for ln in debug
    )
    assert any("connected to the warehouse" in ln for ln in debug)


def test_rich_is_kept_when_asked(db_url: str) -> None:
    """--log-format rich on a pipe: rich's layout (time column, no logger name) as on a terminal."""
    _with_an_order(db_url)
    res = run_subprocess("--log-format", "rich", "run", "--once", env=_env(db_url))
    assert res.exit_code == 0, res.stderr
    assert "cycle 1: synced" in res.stderr
    assert not any(PLAIN.match(line) for line in res.stderr.splitlines())
