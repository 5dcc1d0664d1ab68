"""(6d) The rollover after a day in which 10% of the orders changed: fold vs rebuild.

After a rollover, ten cycles each change a new 1% of the orders and all their items, then
``sync`` and ``refresh --current`` (untimed: the day). Then ``refresh --historic`` (the fold:
the day's summed deltas into the historic part) is timed against ``refresh --rebuild`` (every
summary from scratch over the latest-state tables), which runs after it and a second day of
the same shape (the rebuild empties the current part, so the fold has to come first).
The issue's target: the fold <= 10% of a full rebuild.
"""

from __future__ import annotations

from acme_mv import sync as sync_api
from acme_mv.reports import refresh as refresh_api
from benchmarks import source
from benchmarks.core import Bench, Result, guarded, timed
from benchmarks.one_percent import ready

NAME = "rollover"
#: 1% of the orders each: ten make the day's 10%
CYCLES = 10


def _day(bench: Bench) -> int:
    changed = 0
    for _ in range(CYCLES):
        changed += source.change_orders(bench)
        sync_api.sync(bench.settings)
        refresh_api.refresh(bench.settings, mode="current")
    return changed


def measure(bench: Bench) -> list[Result]:
    with guarded(bench, NAME, "rollover after 10% of the orders changed") as found:
        ready(bench)
        refresh_api.refresh(bench.settings, mode="historic")
        changed = _day(bench)
        fold = Result(
            "rollover10.fold", "refresh --historic (fold) after 10% of the orders changed"
        )
        fold.throughput = False
        folded: list[refresh_api.RefreshResult] = []
        fold.seconds.append(
            timed(lambda: folded.append(refresh_api.refresh(bench.settings, mode="historic")))
        )
        rebuild = Result("rollover10.rebuild", "refresh --rebuild after 10% of the orders changed")
        rebuild.throughput = False
        rebuild.seconds.append(timed(lambda: refresh_api.refresh(bench.settings, mode="rebuild")))
        ratio = fold.seconds[0] / rebuild.seconds[0]
        fold.rows = changed
        fold.target = "<= 10% of a full rebuild"
        fold.met = ratio <= 0.1
        fold.extra = {"fold_vs_rebuild": ratio, "rows_changed_in_the_day": changed}
        fold.note = (
            f"fold {fold.seconds[0]:.3f} s = {ratio:.1%} of the rebuild "
            f"({rebuild.seconds[0]:.2f} s) "
            f"after {CYCLES} cycles of 1% ({changed} source rows changed)"
        )
        found.extend([fold, rebuild])
    return found
