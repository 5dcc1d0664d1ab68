"""The benchmark harness cannot rot: its raw-pipe measurement and its reporting
run here on a tiny source. No timing is asserted, only that the figures exist,
that the rows arrived, and that the report and the JSON say what was measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from benchmarks import parallel_copy, raw_copy, report, source
from benchmarks.__main__ import parse_args, run, selected
from benchmarks.core import Bench, Result, guarded, require
from tests.support.database import DatabaseFactory

ORDERS = 200


@pytest.fixture
def bench(make_db: DatabaseFactory) -> Bench:
    b = Bench(source_url=make_db("empty"), warehouse_url=make_db("empty"), orders=ORDERS, rounds=2)
    source.prepare(b, fresh=True)
    return b


def test_the_source_has_the_asked_orders_and_their_items(bench: Bench) -> None:
    assert bench.counts["orders"] == ORDERS
    assert bench.counts["order_items"] > ORDERS
    with bench.connect("source") as conn:
        future = conn.execute(
            "SELECT count(*) FROM operations.orders WHERE updated_at > localtimestamp"
        ).fetchone()
    assert future == (0,), "an updated_at in the future would hide later changes from any cursor"


def test_a_one_percent_change_touches_one_order_in_a_hundred_and_its_items(bench: Bench) -> None:
    with bench.connect("source") as conn:
        row = conn.execute(
            "SELECT count(*) FROM operations.order_items WHERE order_id % 100 = 0"
        ).fetchone()
    assert row is not None
    changed = source.change_orders(bench)
    assert changed == ORDERS // 100 + row[0]
    with bench.connect("source") as conn:
        marked = conn.execute(
            "SELECT (SELECT count(*) FROM operations.orders WHERE updated_by = -1)"
            " + (SELECT count(*) FROM operations.order_items WHERE updated_by = -1)"
        ).fetchone()
    assert marked == (changed,)
    assert bench.changes == 1


def test_raw_pipe_copies_every_row_and_reports_it(bench: Bench, tmp_path: Path) -> None:
    run(bench, ["raw_copy"])
    for fmt in raw_copy.FORMATS:
        for table in raw_copy.TABLES:
            result = bench.results[f"raw.{table}.{fmt}"]
            assert result.status == "ok", result.note
            assert len(result.seconds) == bench.rounds
            assert result.rows == bench.counts[table]
            assert result.extra["copied_rows"] == bench.counts[table]
            assert result.rows_per_s is not None and result.rows_per_s > 0
        both = bench.results[f"raw.{fmt}"]
        parts = [bench.results[f"raw.{t}.{fmt}"] for t in raw_copy.TABLES]
        assert both.seconds == [sum(s) for s in zip(*(p.seconds for p in parts), strict=True)]
    with bench.connect("warehouse") as conn:
        assert conn.execute("SELECT to_regnamespace(%s)", (raw_copy.SCRATCH,)).fetchone() == (None,)

    table = report.markdown(bench)
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + len(bench.results)  # header + one row each
    assert f"{ORDERS:,} orders" in table
    for name in bench.results:
        assert f"(`{name}`)" in table

    path = tmp_path / "out" / "latest.json"
    written = report.write_json(bench, path)
    doc = json.loads(path.read_text())
    assert doc == written
    assert doc["orders"] == ORDERS and doc["rounds"] == bench.rounds
    assert doc["versions"]["postgresql"]
    assert {m["name"] for m in doc["measurements"]} == set(bench.results)
    binary = next(m for m in doc["measurements"] if m["name"] == "raw.binary")
    assert binary["median_s"] == bench.results["raw.binary"].median


def test_a_missing_module_or_a_failure_is_a_line_not_a_crash(bench: Bench) -> None:
    with guarded(bench, "missing", "not installed"):
        require("acme_mv.no_such_module", "sync")
    with guarded(bench, "broken", "raises") as found:
        found.append(Result("broken.part", "measured before the failure", seconds=[1.0]))
        with psycopg.connect(bench.warehouse_url) as conn:
            conn.execute("SELECT * FROM no_such_table")
    assert bench.results["missing"].status == "not available"
    assert "acme_mv.no_such_module" in bench.results["missing"].note
    assert bench.results["broken"].status == "error"
    assert "no_such_table" in bench.results["broken"].note
    assert bench.results["broken.part"].status == "ok"
    table = report.markdown(bench)
    assert "| not available: acme_mv.no_such_module" in table.replace("(`missing`) ", "")


def test_ratios_use_figures_of_the_same_run() -> None:
    results = {
        "raw.binary": Result("raw.binary", "raw", seconds=[1.0, 2.0, 3.0], rows=100),
        "sync.full": Result("sync.full", "sync", seconds=[2.0, 2.4, 2.2], rows=100),
        "pandas": Result("pandas", "pandas", seconds=[10.0], rows=10),
    }
    report.compute_ratios(results)
    assert results["sync.full"].ratio == pytest.approx(1.1)
    assert results["sync.full"].met is True
    assert results["pandas"].ratio == pytest.approx((100 / 2.2) / 1.0)
    assert results["pandas"].met is False
    assert results["raw.binary"].ratio is None


def test_only_and_skip_select_measurements() -> None:
    assert selected(parse_args(["--only", "scale,raw_copy"])) == ["raw_copy", "scale"]
    assert "dlt_baseline" not in selected(parse_args(["--skip", "dlt_baseline"]))
    with pytest.raises(SystemExit):
        parse_args(["--only", "nonsense"])


def test_the_docs_tables_come_from_the_result_files_but_latest(
    bench: Bench, tmp_path: Path
) -> None:
    folder = tmp_path / "benchmarks" / "results"
    assert report.results_markdown(folder).startswith("No result file is committed")
    bench.results["raw.binary"] = Result("raw.binary", "raw binary pipe", seconds=[1.0], rows=300)
    bench.results["sync.full"] = Result(
        "sync.full", "acme-mv sync, initial", seconds=[2.0, 1.5, 3.0], rows=300
    )
    report.compute_ratios(bench.results)
    with guarded(bench, "missing", "not installed"):
        require("acme_mv.no_such_module", "sync")
    report.write_json(bench, folder / "run-a.json", description="A small run.")
    report.write_json(bench, folder / report.LATEST)
    (folder / "other.json").write_text('{"figures": []}')  # neither shape

    text = report.results_markdown(folder)
    assert "### `benchmarks/results/run-a.json`" in text
    assert "A small run." in text
    assert report.LATEST not in text
    assert report.table(json.loads((folder / "run-a.json").read_text())) in text
    row = next(line for line in text.splitlines() if "(`sync.full`)" in line)
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[1:8] == ["ok", "300", "2", "1.5", "3", "150", "2 vs raw.binary"]
    assert cells[8] == "<= 1.2x the raw binary pipe ✗"
    assert "| not available: acme_mv.no_such_module" in text.replace("(`missing`) ", "")
    assert "Not tabulated" in text and "`benchmarks/results/other.json`" in text


def test_parallel_copy_runs_beside_the_raw_pipe_in_the_same_rounds(
    bench: Bench, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from acme_mv.staging import parallel

    monkeypatch.setattr(parallel, "MIN_PART_BLOCKS", 1)  # the smoke source is tiny
    monkeypatch.setattr(parallel_copy, "JOBS", (1, 2))  # whatever ACME_MV_BENCH_JOBS says
    run(bench, ["parallel_copy"])
    rows = bench.counts["orders"] + bench.counts["order_items"]
    variants = {parallel_copy.variant_name(n): n for n in parallel_copy.JOBS}
    for name in ("parallel.raw", "parallel.raw_pk", *variants):
        result = bench.results[name]
        assert result.status == "ok", result.note
        assert len(result.seconds) == bench.rounds and result.rows == rows
        # what each variant wrote, per live source row: staging (a sync) holds more than the
        # rows of orders and order_items alone (the index-free pipe), the keys add to those
        assert len(result.extra["bytes_per_row"]) == bench.rounds
        # and over what the source's own tables take: the same bytes, divided otherwise
        source = result.extra["source_bytes_per_row"]
        assert source > 0 and len(result.extra["to_source"]) == bench.rounds
        assert result.extra["to_source"][0] == pytest.approx(
            result.extra["bytes_per_row"][0] / source, abs=0.01
        )
        assert len(result.extra["load"]) == bench.rounds
        cpu = result.extra["cpu"]  # each round's CPU seconds, the box's and the clients'
        assert len(cpu) == bench.rounds
        assert all(c["box_s"] + 0.05 >= c["clients_s"] > 0 for c in cpu)
    for name, jobs in variants.items():
        result = bench.results[name]
        assert result.extra["jobs"] == jobs
        assert len(result.extra["round_ratios"]) == bench.rounds
        assert result.ratio == result.extra["median_round_ratio"]
        assert result.ratio_to == "parallel.raw"
        assert len(result.extra["round_ratios_pk"]) == bench.rounds
        assert (
            result.extra["bytes_per_row"][0]
            > bench.results["parallel.raw"].extra["bytes_per_row"][0]
        )
        # the phases were recorded: the parallel runs attached, the serial one did not
        lines = " ".join(" ".join(p) for p in result.extra["phases"])
        assert ("attached in" in lines) == (jobs > 1), lines
    with bench.connect("warehouse") as conn:
        staged = conn.execute(
            "SELECT (SELECT count(*) FROM staging.orders)"
            " + (SELECT count(*) FROM staging.order_items)"
        )
        assert staged.fetchone() == (rows,)
    # the docs' tables come from the JSON: one line per round, the phases of both paths
    path = tmp_path / "parallel.json"
    report.write_json(bench, path)
    text = parallel_copy.markdown(str(path))
    assert text.count("\n| 1 |") == 1 and text.count("\n| 2 |") == 1
    assert "| order_items: COPY |" in text
    assert "| order_items_state: derived from the loaded versions |" in text
    assert "| order_items: attach |" in text  # the serial path's
    assert "| bytes written per live source row |" in text
    assert "raw pipe, keys" in text
    assert "| apply: state inserts |" in text and "| attach (partitions, state tables) |" in text
    assert "| server (box - clients) |" in text


def test_a_standalone_result_file_is_tabulated_figure_by_figure(tmp_path: Path) -> None:
    """benchmarks/standalone.py's shape: parameters and named figures, flattened."""
    folder = tmp_path / "benchmarks" / "results"
    folder.mkdir(parents=True)
    (folder / "cdc-1.json").write_text(
        json.dumps(
            {
                "orders": 20000,
                "rate": 2000,
                "load": [1.5, 2.0, 2.5],
                "results": {"cdc.lag": {"p99": 0.3884, "note": "a|b", "series": [1, 2]}},
            }
        )
    )
    text = report.results_markdown(folder, root=tmp_path)
    assert "### `benchmarks/results/cdc-1.json`" in text
    assert "orders 20000; rate 2000; load (1/5/15 min) 1.50/2.00/2.50" in text
    assert "| `cdc.lag.p99` | 0.388 |" in text
    assert "| `cdc.lag.note` | a\\|b |" in text
    assert "series" not in text and "Not tabulated" not in text
