"""(9) Scale: about 100 million rows (3.7M orders), the initial sync time.

Runs in two databases of its own (``acme_bench_scale_source``, kept for the
next run; ``acme_bench_scale_warehouse``, dropped afterwards) and only when
the server's data directory is local and has room (see ``DISK_NEEDED``).
One round: building the source takes far longer than the sync.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import psycopg

from acme_mv import sync as sync_api
from acme_mv.db import ensure_database
from benchmarks import pg, source
from benchmarks.acme_sync import migrated
from benchmarks.core import Bench, NotAvailable, Result, guarded, timed

NAME = "scale"
ORDERS = 3_700_000
#: ~100M rows in the source, the same again in staging, plus indexes and WAL
DISK_NEEDED = 60 * 1024**3
#: staging bytes per source byte (indexes included) and room for WAL and sorts
STAGING_PER_SOURCE = 1.5
WAL_ROOM = 8 * 1024**3
SOURCE_DB = "acme_bench_scale_source"
WAREHOUSE_DB = "acme_bench_scale_warehouse"


def free_disk(bench: Bench) -> int:
    """Free bytes where the server keeps its data (it must be on this machine)."""
    with psycopg.connect(bench.server_url, autocommit=True) as conn:
        try:
            row = conn.execute("SHOW data_directory").fetchone()
        except psycopg.Error:
            raise NotAvailable("cannot see the server's data_directory to check the disk") from None
    data = Path(str(row[0])) if row else None
    if data is None or not data.exists():
        raise NotAvailable(
            "the server's data directory is not on this machine; cannot check the disk"
        )
    return shutil.disk_usage(data).free


def disk_needed(bench: Bench) -> int:
    """:data:`DISK_NEEDED`, or when the source is already there: staging (~1.4x the source's
    size with its indexes, measured at 1M orders) plus :data:`WAL_ROOM`."""
    with psycopg.connect(bench.server_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_database_size(datname) FROM pg_database WHERE datname = %s", (SOURCE_DB,)
        ).fetchone()
    return DISK_NEEDED if row is None else int(row[0] * STAGING_PER_SOURCE) + WAL_ROOM


def measure(bench: Bench) -> list[Result]:
    with guarded(bench, "scale.sync", "acme-mv sync at ~100M rows") as found:
        if not bench.server_url:
            raise NotAvailable("needs the server's admin URL")
        free, needed = free_disk(bench), disk_needed(bench)
        if free < needed:
            raise NotAvailable(
                f"needs ~{needed / 1024**3:.0f} GB free, {free / 1024**3:.0f} GB are"
            )
        with psycopg.connect(bench.server_url, autocommit=True) as server:
            ensure_database(server, SOURCE_DB)
            ensure_database(server, WAREHOUSE_DB, recreate=True)
        big = replace(
            bench,
            source_url=pg.with_db(bench.server_url, SOURCE_DB),
            warehouse_url=pg.with_db(bench.server_url, WAREHOUSE_DB),
            orders=ORDERS,
            rounds=1,
            results={},
        )
        try:
            source.prepare(big, fresh=False)
            migrated(big)
            result = Result(
                "scale.sync",
                f"acme-mv sync, initial, {ORDERS:,} orders",
                rows=sum(big.counts.values()),
            )
            result.seconds.append(timed(lambda: sync_api.sync(big.settings)))
            found.append(result)
        finally:
            with psycopg.connect(bench.server_url, autocommit=True) as server:
                server.execute(f"DROP DATABASE IF EXISTS {WAREHOUSE_DB} WITH (FORCE)")
    return found
