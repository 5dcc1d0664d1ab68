"""The latency benchmarks' pure helpers: what they read from the run loop's log, percentiles,
and the source-cost subtraction (no server; the benchmarks themselves run on one)."""

from __future__ import annotations

from datetime import date

import pytest

from acme_mv.reports.refresh import RefreshResult
from acme_mv.run.loop import Cycle, _describe
from benchmarks import freshness, probe, source_cost


def _cycle(number: int, rows: int, sync_s: float, refresh_s: float, *, folded: bool) -> Cycle:
    return Cycle(
        number=number,
        rows_synced=rows,
        sync_seconds=sync_s,
        refresh=RefreshResult(
            rebuilt_historic=folded,
            reason="a new day" if folded else "",
            historic_batch_id=1,
            refreshed_batch_id=2,
            refreshed_batch_at=None,
            day=date(2026, 11, 26),
            historic_seconds=0.5 if folded else None,
            current_seconds=refresh_s,
            total_seconds=refresh_s,
        ),
        freshness_seconds=None if folded else 1.25,
        failures_before=2 if folded else 0,
    )


def test_cycles_reads_the_run_loops_own_lines() -> None:
    text = "\n".join(
        [
            "2026-11-26T12:00:00Z INFO acme_mv.run.loop "
            + _describe(_cycle(1, 330, 1.45, 0.2, folded=False)),
            "2026-11-26T12:00:01Z WARNING acme_mv.run.loop cycle failed (source): gone",
            "2026-11-26T12:00:03Z INFO acme_mv.run.loop "
            + _describe(_cycle(2, 12, 0.5, 3.75, folded=True)),
        ]
    )
    assert freshness.cycles(text) == [
        {"cycle": 1, "rows": 330, "sync_s": 1.45, "refresh": "current", "refresh_s": 0.2},
        {"cycle": 2, "rows": 12, "sync_s": 0.5, "refresh": "historic+current", "refresh_s": 3.75},
    ]


def test_cycle_spread_counts_and_spreads() -> None:
    found = [{"rows": r, "sync_s": s, "refresh_s": 0.1} for r, s in [(1, 1.0), (2, 2.0), (3, 3.0)]]
    spread = freshness.cycle_spread(found)
    assert spread["cycles"] == 3
    assert spread["sync_s"] == {"p50": 2.0, "p95": 3.0, "p99": 3.0, "max": 3.0}
    assert freshness.cycle_spread([]) == {
        "cycles": 0,
        "sync_s": None,
        "refresh_s": None,
        "rows": None,
    }


@pytest.mark.parametrize(
    ("q", "expected"), [(0.5, 50.0), (0.95, 95.0), (0.99, 99.0), (1.0, 100.0), (0.0, 1.0)]
)
def test_percentile_is_the_nearest_rank(q: float, expected: float) -> None:
    assert probe.percentile([float(v) for v in range(100, 0, -1)], q) == expected


def test_own_cost_takes_the_writers_share_per_change_out() -> None:
    counters = (*source_cost.COUNTERS[:-1], "blocks")
    writes = {f"{k}_per_min": 10.0 for k in counters} | {"row_changes_per_min": 100.0}
    # the reader's stretch wrote half as many changes: the writers' share is half of theirs
    reader = {f"{k}_per_min": 1005.0 for k in counters} | {"row_changes_per_min": 50.0}
    own = source_cost.own_cost(writes, reader)
    assert own == {f"{k}_per_min": 1000.0 for k in counters}
