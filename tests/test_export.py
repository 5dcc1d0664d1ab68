"""Exports: byte-for-byte CSV of a known dataset, stdout, JSON, limits, --all, and one clear
line for every refusal."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from acme_mv.config import Settings
from acme_mv.reports.refresh import refresh
from tests.support.cli_runner import run
from tests.support.delivery_data import EXPECTED
from tests.support.staging_copy import copy_batch


@pytest.mark.parametrize("report", list(EXPECTED))
def test_each_report_byte_for_byte(refreshed: str, tmp_path: Path, report: str) -> None:
    res = run("export", report, "--output-dir", str(tmp_path))
    assert res.exit_code == 0, res.stderr
    path = Path(res.stdout.strip())
    assert path.parent == tmp_path
    assert re.fullmatch(rf"{report}_result_\d{{8}}_\d{{6}}\.csv", path.name)
    assert path.read_bytes() == EXPECTED[report].encode()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_output_dash_writes_to_stdout(refreshed: str) -> None:
    res = run("export", "pending_items", "--output", "-")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == EXPECTED["pending_items"]


def test_output_names_the_file(refreshed: str, tmp_path: Path) -> None:
    target = tmp_path / "mine.csv"
    res = run("export", "open_orders", "--output", str(target))
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == str(target)
    assert target.read_text() == EXPECTED["open_orders"]


def test_json(refreshed: str) -> None:
    res = run("export", "top_customers", "--format", "json", "--output", "-")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout) == [
        {"customer_id": 1, "customer_name": "Ann", "pending_orders": 1},
        {"customer_id": 2, "customer_name": "Bob, Jr.", "pending_orders": 1},
    ]
    res = run("export", "open_orders", "--format", "json", "--output", "-")
    rows = json.loads(res.stdout)
    assert rows[0] == {"delivery_date": "2026-12-11", "status": "PENDING", "open_orders": 1}
    assert rows[-1] == {"delivery_date": None, "status": "PENDING", "open_orders": 1}


def test_json_of_an_empty_report_is_an_empty_array(
    db_url: str, cli_env: Callable[..., None]
) -> None:
    refresh(Settings(database_url=db_url))
    cli_env(database_url=db_url)
    res = run("export", "open_orders", "--format", "json", "--output", "-")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout) == []


def test_limit(refreshed: str) -> None:
    res = run("export", "top_dates", "--limit", "1", "--output", "-")
    assert res.stdout == "delivery_date,open_orders\n2026-12-11,2\n"
    res = run("export", "top_dates", "--limit", "10", "--output", "-")
    assert res.stdout.splitlines()[-1] == ",1"  # the NULL date ranks after real dates on ties
    res = run("export", "open_orders", "--limit", "1", "--output", "-")
    assert res.exit_code == 1
    assert "--limit applies to top_dates and top_customers only" in res.stderr


def test_all(refreshed: str, tmp_path: Path) -> None:
    res = run("export", "--all", "--output-dir", str(tmp_path), "--limit", "2")
    assert res.exit_code == 0, res.stderr
    written = [Path(line) for line in res.stdout.splitlines()]
    assert sorted(p.name.split("_result_")[0] for p in written) == sorted(EXPECTED)
    by_report = {p.name.split("_result_")[0]: p.read_text() for p in written}
    assert by_report["open_orders"] == EXPECTED["open_orders"]
    assert by_report["top_dates"] == "delivery_date,open_orders\n2026-12-11,2\n2026-12-12,1\n"


def _one_line_error(res: object, *, contains: str) -> None:
    assert res.exit_code != 0  # type: ignore[attr-defined]
    text = res.stderr.strip()  # type: ignore[attr-defined]
    assert text.startswith("Error: ") and text.count("Error") == 1, text
    assert contains in " ".join(text.split()), text  # rich wraps long lines at the console width
    assert "Traceback" not in res.stderr  # type: ignore[attr-defined]


def test_unknown_report(refreshed: str) -> None:
    res = run("export", "nope")
    _one_line_error(res, contains="Unknown report 'nope'; the reports are: open_orders, top_dates")


def test_missing_directory(refreshed: str, tmp_path: Path) -> None:
    """--output's folder must exist (an --output-dir is created: tests/test_cli_errors.py)."""
    res = run("export", "open_orders", "--output", str(tmp_path / "missing" / "x.csv"))
    _one_line_error(res, contains="no such directory")


def test_unwritable_directory(refreshed: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = run("export", "open_orders", "--output", str(blocker / "x.csv"))
    _one_line_error(res, contains="Cannot write")


def test_existing_file_needs_force(refreshed: str, tmp_path: Path) -> None:
    target = tmp_path / "r.csv"
    target.write_text("keep me")
    res = run("export", "open_orders", "--output", str(target))
    _one_line_error(res, contains="already exists. Use --force")
    assert target.read_text() == "keep me"
    res = run("export", "open_orders", "--output", str(target), "--force")
    assert res.exit_code == 0, res.stderr
    assert target.read_text() == EXPECTED["open_orders"]


def test_not_migrated(empty_url: str, cli_env: Callable[..., None], tmp_path: Path) -> None:
    cli_env(database_url=empty_url)
    res = run("export", "open_orders", "--output-dir", str(tmp_path))
    _one_line_error(res, contains="acme-mv migrate")
    assert list(tmp_path.iterdir()) == []


def test_never_refreshed(db_url: str, cli_env: Callable[..., None], tmp_path: Path) -> None:
    cli_env(database_url=db_url)
    res = run("export", "open_orders", "--output-dir", str(tmp_path))
    _one_line_error(res, contains="run `acme-mv refresh`".replace("run", "Run"))
    assert list(tmp_path.iterdir()) == []


def test_as_of_a_past_moment_and_outside_the_kept_history(refreshed: str) -> None:
    """The report as the warehouse knew it after the first batch, after a later batch moved an
    order; a moment before the kept history is one clear line."""
    with psycopg.connect(refreshed, autocommit=True) as conn:
        first_at = conn.execute("SELECT finished_at FROM staging.sync_batches").fetchone()
        assert first_at is not None
        conn.execute(
            "UPDATE operations.orders SET status = 'COMPLETED', updated_at "
            "= now() WHERE order_id = 1"
        )
    copy_batch(refreshed, refreshed)
    refresh(Settings(database_url=refreshed))
    res = run("export", "open_orders", "--output", "-", "--as-of", first_at[0].isoformat())
    assert res.exit_code == 0, res.stderr
    assert res.stdout == EXPECTED["open_orders"]
    now = run("export", "open_orders", "--output", "-")
    assert now.stdout == EXPECTED["open_orders"].replace("2026-12-11,PENDING,1\n", "")
    with psycopg.connect(refreshed, autocommit=True) as conn:
        conn.execute(
            "UPDATE analytics.snapshot SET history_batch_id = (SELECT max(batch_id) "
            "FROM staging.sync_batches)"
        )
    res = run("export", "open_orders", "--output", "-", "--as-of", first_at[0].isoformat())
    assert res.exit_code == 1
    assert "are not kept: the history starts after batch" in res.stderr
    res = run("export", "open_orders", "--as-of", "yesterday")
    assert res.exit_code == 2  # a usage error
    assert "--as-of 'yesterday' is not a time" in res.stderr
