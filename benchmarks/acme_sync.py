"""(2) acme-mv sync, initial full copy; (5) incremental sync after a 1% change.

Full: every round runs ``sync(full=True)`` into an emptied staging (versions,
latest-state tables, deltas), i.e. a first copy.
Incremental: each round changes 1% of the orders and their items on the
source (untimed), then times a plain ``sync``.
"""

from __future__ import annotations

from acme_mv import sync as sync_api
from benchmarks import source
from benchmarks.core import Bench, Result, guarded, rounds

NAME = "acme_sync"


_EMPTY_STAGING = """
TRUNCATE staging.orders, staging.order_items, staging.orders_state, staging.order_items_state,
    analytics.open_orders_delta, analytics.pending_orders_delta, analytics.pending_items_delta
"""


def empty_staging(bench: Bench) -> None:
    """Back to a first copy (untimed): staging's versions, latest state and deltas emptied."""
    with bench.connect("warehouse") as wh:
        wh.execute(_EMPTY_STAGING)
        wh.execute("CHECKPOINT")  # each variant starts without the previous one's dirty pages


def migrated(bench: Bench) -> None:
    from acme_mv import migrate

    migrate.upgrade(bench.warehouse_url)


def reports_ready(bench: Bench) -> None:
    """Migrate, sync and refresh (untimed): the reports are there to be read."""
    from acme_mv.reports import refresh as refresh_api

    migrated(bench)
    sync_api.sync(bench.settings)
    refresh_api.refresh(bench.settings, mode="auto")


def measure(bench: Bench) -> list[Result]:
    with guarded(bench, "sync", "acme-mv sync") as found:
        migrated(bench)
        full = Result(
            "sync.full", "acme-mv sync, initial full copy", rows=sum(bench.counts.values())
        )
        rounds(
            bench,
            full,
            lambda: sync_api.sync(bench.settings, full=True),
            before=lambda: empty_staging(bench),
        )
        found.append(full)

        changed: list[int] = []
        incremental = Result("sync.incremental", "acme-mv sync after a 1% change")
        rounds(
            bench,
            incremental,
            lambda: sync_api.sync(bench.settings),
            before=lambda: changed.append(source.change_orders(bench)),
        )
        incremental.rows = round(sum(changed) / len(changed))
        found.append(incremental)
    return found
