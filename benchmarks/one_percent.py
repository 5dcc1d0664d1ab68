"""(6c) 1% of the orders change: sync, then refresh, against a full rebuild and the old design.

Each round (untimed: the source writes) changes 1% of the orders (one status step) and all
their items (a new quantity), then times ``acme-mv sync`` and ``refresh --current``. The
references, timed once on the same warehouse: ``refresh --rebuild`` (the summaries from
scratch over the latest-state tables) and the old all-versions recomputation (the three
aggregates as plain materialized views over ``staging.*_latest``, the latest version per key
picked from every staged version: what the rebuild of the first design cost). The issue's
target: the refresh <= 2% of a full rebuild.
"""

from __future__ import annotations

from acme_mv import sync as sync_api
from acme_mv.reports import refresh as refresh_api
from benchmarks import refresh as refresh_bench
from benchmarks import source
from benchmarks.acme_sync import migrated
from benchmarks.core import Bench, Result, guarded, timed

NAME = "one_percent"


def timed_refresh(bench: Bench, mode: refresh_api.RefreshMode) -> refresh_api.RefreshResult:
    """A refresh; its ``total_seconds`` is the time of the whole call (connect included)."""
    return refresh_api.refresh(bench.settings, mode=mode)


def ready(bench: Bench) -> None:
    """A synced warehouse with a snapshot (reused when an earlier measurement made one)."""
    migrated(bench)
    with bench.connect("warehouse") as conn:
        row = conn.execute("SELECT historic_batch_id FROM analytics.snapshot").fetchone()
    if row is None or row[0] is None:
        sync_api.sync(bench.settings)
        refresh_api.refresh(bench.settings, mode="historic")


def measure(bench: Bench) -> list[Result]:
    with guarded(bench, NAME, "1% of the orders changed: sync and refresh") as found:
        ready(bench)
        rebuild = Result("one_percent.rebuild", "refresh --rebuild (from the latest-state tables)")
        rebuild.throughput = False
        rebuild.seconds.append(timed(lambda: refresh_api.refresh(bench.settings, mode="rebuild")))
        syncs = Result("one_percent.sync", "acme-mv sync after 1% of the orders changed")
        current = Result("one_percent.refresh", "refresh --current after 1% of the orders changed")
        current.throughput = False
        changed: list[int] = []
        delta_rows: list[int] = []
        for _ in range(bench.rounds):
            changed.append(source.change_orders(bench))
            syncs.seconds.append(timed(lambda: sync_api.sync(bench.settings)))
            done = timed_refresh(bench, "current")
            current.seconds.append(done.total_seconds)
            delta_rows.append(done.delta_rows)
        rebuild.seconds.append(timed(lambda: refresh_api.refresh(bench.settings, mode="rebuild")))
        old = Result(
            "one_percent.all_versions",
            "the old all-versions recomputation (3 aggregates over staging.*_latest)",
        )
        old.throughput = False
        refresh_bench.reset_reference(bench)
        try:
            old.seconds.append(timed(lambda: refresh_bench.reference(bench)))
        finally:
            refresh_bench.reset_reference(bench)
            with bench.connect("warehouse") as conn:
                conn.execute("DROP SCHEMA IF EXISTS bench_ref CASCADE")
        syncs.rows = current.rows = round(sum(changed) / len(changed))
        rebuild_s = min(rebuild.seconds)
        worst = max(current.seconds)
        current.extra = {
            "refresh_s": current.seconds,
            "sync_s": syncs.seconds,
            "rows_changed": changed,
            "delta_rows_per_refresh": delta_rows,
            "rebuild_s": rebuild.seconds,
            "all_versions_s": old.seconds,
            "worst_vs_rebuild": worst / rebuild_s,
            "worst_vs_slowest_rebuild": worst / max(rebuild.seconds),
            "worst_vs_all_versions": worst / old.seconds[0],
        }
        current.target = "<= 2% of a full rebuild"
        current.met = worst / rebuild_s <= 0.02
        current.note = (
            "refresh (s): "
            + ", ".join(f"{s:.3f}" for s in current.seconds)
            + f"; worst {worst / rebuild_s:.1%} of the fastest rebuild "
            f"({rebuild_s:.2f} s; rebuilds "
            + ", ".join(f"{s:.2f}" for s in rebuild.seconds)
            + f" s), {worst / old.seconds[0]:.1%} of the all-versions recomputation "
            + f"({old.seconds[0]:.2f} s); delta rows per refresh {', '.join(map(str, delta_rows))}"
        )
        found.extend([current, syncs, rebuild, old])
    return found
