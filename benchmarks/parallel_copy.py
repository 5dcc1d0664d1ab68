"""(2b) The parallel first copy against the raw pipe, side by side in the same rounds.

Each round runs, one after the other on the same server and source: the raw
binary ``psql | psql`` pipe of orders and order_items into index-free tables
(:func:`benchmarks.raw_copy.pipe`), ``sync(jobs=1)`` (the serial path) and
``sync(jobs=N)`` for each N of :data:`JOBS`, each a first sync into an empty
warehouse (version tables, latest-state tables and deltas emptied, untimed,
before it). Alternating inside a round means a busy neighbour slows all
variants alike; the figure that counts is the median over rounds of each
round's ratio (``extra.round_ratios``). Each round also records the load
average (``extra.load``) and, per sync, its phases as the sync logs them at
DEBUG (``extra.phases``: COPY, index builds, ANALYZE, attach, apply).
"""

from __future__ import annotations

import logging
import os
import statistics

from psycopg import sql

from acme_mv import sync as sync_api
from benchmarks import pg, raw_copy
from benchmarks.acme_sync import migrated
from benchmarks.core import Bench, Result, guarded, timed

NAME = "parallel_copy"
#: the parallel variants (sessions); 1 (the serial path) always runs
JOBS = tuple(int(j) for j in os.environ.get("ACME_MV_BENCH_JOBS", "2").split(","))

_EMPTY = """
TRUNCATE staging.orders, staging.order_items, staging.orders_state, staging.order_items_state,
    analytics.open_orders_delta, analytics.pending_orders_delta, analytics.pending_items_delta
"""


class _Phases(logging.Handler):
    """The DEBUG lines of acme_mv.sync.* during one sync (where its time went)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.created:.2f} {record.name} {record.getMessage()}")


def _sync(bench: Bench, jobs: int, phases: list[list[str]]) -> None:
    handler = _Phases()
    logger = logging.getLogger("acme_mv.sync")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        sync_api.sync(bench.settings, jobs=jobs)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    phases.append(handler.lines)


def _empty_staging(bench: Bench) -> None:
    with bench.connect("warehouse") as wh:
        wh.execute(_EMPTY)
        wh.execute("CHECKPOINT")  # each variant starts without the previous one's dirty pages


def _empty_scratch(bench: Bench) -> None:
    with bench.connect("warehouse") as wh:
        for table in raw_copy.TABLES:
            wh.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(raw_copy.SCRATCH, table)))
        wh.execute("CHECKPOINT")


def _raw(bench: Bench) -> None:
    for table in raw_copy.TABLES:
        raw_copy.pipe(bench, table, "binary")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure(bench: Bench) -> list[Result]:
    with guarded(bench, "parallel", "parallel first copy vs raw pipe") as found:
        migrated(bench)
        with bench.connect("source") as src, bench.connect("warehouse") as wh:
            for table in raw_copy.TABLES:
                pg.create_like(wh, raw_copy.SCRATCH, table, pg.columns(src, "operations", table))
        rows = sum(bench.counts.get(t, 0) for t in raw_copy.TABLES)
        raw = Result("parallel.raw", "raw COPY binary pipe, same rounds", rows=rows)
        variants = [(1, Result("parallel.serial", "acme-mv sync --jobs 1, first sync", rows=rows))]
        for n in JOBS:
            variants.append(
                (n, Result(f"parallel.jobs{n}", f"acme-mv sync --jobs {n}, first sync", rows=rows))
            )
        for result in (raw, *(r for _, r in variants)):
            result.extra["load"] = []
        for _, result in variants:
            result.extra["phases"] = []
        for i in range(bench.rounds):
            _empty_scratch(bench)
            raw.extra["load"].append(_load())
            raw.seconds.append(timed(lambda: _raw(bench)))
            logging.getLogger("benchmarks").info("round %d raw: %.1f s", i + 1, raw.seconds[-1])
            for n, result in variants:
                _empty_staging(bench)
                result.extra["load"].append(_load())
                result.seconds.append(
                    timed(lambda n=n, r=result: _sync(bench, n, r.extra["phases"]))
                )
                logging.getLogger("benchmarks").info(
                    "round %d --jobs %d: %.1f s (load %s)", i + 1, n, result.seconds[-1], _load()
                )
        for n, result in variants:
            result.extra["jobs"] = n
            ratios = [s / r for s, r in zip(result.seconds, raw.seconds, strict=True)]
            result.extra["round_ratios"] = [round(x, 3) for x in ratios]
            result.extra["median_round_ratio"] = round(statistics.median(ratios), 3)
            result.ratio = result.extra["median_round_ratio"]
            result.ratio_to = "parallel.raw"
            result.target = "<= 1.2x the raw pipe, same rounds"
            result.met = result.ratio <= 1.2
        found.extend([raw, *(result for _, result in variants)])
        with bench.connect("warehouse") as wh:
            pg.drop_schema(wh, raw_copy.SCRATCH)
    return found
