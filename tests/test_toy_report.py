"""A report added the documented way (its SQL files, its tables, nothing else) flows through
every stage that iterates the registry: sync (first and incremental batches, ``--full``'s
tombstones), refresh, the day's fold, verify, export, grant-reader and compaction."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg

from acme_mv.sample import load
from tests.support import toy_report
from tests.support.cli_runner import child_env
from tests.support.roles import RoleFactory

ROOT = Path(__file__).resolve().parent.parent


def test_a_toy_report_flows_through_every_stage(
    db_url: str, tmp_path: Path, make_role: RoleFactory
) -> None:
    with psycopg.connect(db_url) as conn:
        load.load(conn, orders=300, days=20, seed=5, mode="replace")
    views = toy_report.views_with_toy(tmp_path / "views")
    toy_report.create_tables(db_url, views)
    reader = make_role("toy_reader")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.toy_report",
            str(views),
            db_url,
            reader.name,
            reader.url(db_url),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=child_env(),
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)

    assert toy_report.NAME in seen["registry"] and toy_report.NAME in seen["summaries"]
    assert toy_report.NAME in seen["verified"]
    for name, step in seen["steps"].items():
        assert step["header"] == "customer_id,open_orders", name
        assert step["export"] == step["from_scratch"] != [], name
        assert step["verified_groups"] > 0, name
    steps = seen["steps"]
    assert steps["first"]["export"] != steps["changes"]["export"] != steps["delete"]["export"]
    assert steps["delete"]["current"] > 0 and steps["fold"]["current"] == 0
    assert steps["fold"]["historic"] == len(steps["fold"]["export"])
    assert f"analytics.{toy_report.NAME}" in seen["granted"]
    assert seen["reader_rows"] == len(steps["fold"]["export"])
    assert seen["deltas_before"] > 0 and seen["delta_rows_deleted"] >= seen["deltas_before"]
    assert seen["deltas_after"] == 0 and seen["history_batch_id"] > 0
