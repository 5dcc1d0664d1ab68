"""(2) acme-mv sync, initial full copy; (5) incremental sync after a 1% change.

Full: the first round copies into an empty staging, the next ones run
``sync(full=True)`` (TRUNCATE + COPY in the sync transaction: the same work).
Incremental: each round changes 1% of the orders and their items on the
source (untimed), then times a plain ``sync``.
"""

from __future__ import annotations

from acme_mv import sync as sync_api
from benchmarks import source
from benchmarks.core import Bench, Result, guarded, rounds

NAME = "acme_sync"


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
        rounds(bench, full, lambda: sync_api.sync(bench.settings, full=True))
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
