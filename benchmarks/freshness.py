"""(8) Freshness under load: commit on the source -> visible in the union views.

``acme-mv sample simulate --rate 200`` writes steadily while
``acme-mv run --interval 5s`` syncs and refreshes. Every second the benchmark
commits a probe order on the source (PENDING, a delivery date of its own far
in the future) and polls ``analytics.open_orders`` for it; the delay of a
probe is the time from its commit to the poll that first sees its group
(:mod:`benchmarks.probe`). p50/p95 over the probes; probes never seen are
reported, and so are the run loop's cycles (sync and refresh seconds, from
its log): where the delay goes.

The rollover scenario, standalone (``--changed 0.10``: after the rollover, 10% of
the orders and all their items change and are synced before the measured
stretch, so the current-day part already holds them)::

    python -m benchmarks.freshness --orders 200000 --interval 1s --duration 600 --changed 0.10
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from datetime import date
from typing import Any

import psycopg

from acme_mv import sync as sync_api
from acme_mv.reports import refresh as refresh_api
from benchmarks import probe, source, standalone
from benchmarks.acme_sync import migrated
from benchmarks.core import Bench, Result, guarded

log = logging.getLogger(__name__)

NAME = "freshness"
RATE = 200
INTERVAL = "5s"
#: how long probes are committed
DURATION_S = 60.0
PROBE_EVERY_S = 1.0
POLL_EVERY_S = 0.1
PROBE_BASE = date(2100, 1, 1)
#: the run loop's line per cycle (acme_mv.run.loop._describe)
CYCLE_LINE = re.compile(
    r"cycle (\d+): synced (\d+) rows.* in ([\d.]+)s, refreshed (\S+).* in ([\d.]+)s"
)


def cycles(log_text: str) -> list[dict[str, Any]]:
    """The run loop's cycles as its log tells them: rows synced, sync and refresh seconds."""
    return [
        {
            "cycle": int(m[1]),
            "rows": int(m[2]),
            "sync_s": float(m[3]),
            "refresh": m[4],
            "refresh_s": float(m[5]),
        }
        for m in CYCLE_LINE.finditer(log_text)
    ]


def cycle_spread(found: list[dict[str, Any]]) -> dict[str, Any]:
    """p50/p95/max of the cycles' sync and refresh seconds, and their count."""
    out: dict[str, Any] = {"cycles": len(found)}
    for key in ("sync_s", "refresh_s", "rows"):
        values = [float(c[key]) for c in found]
        out[key] = probe.spread(values) if values else None
    return out


def measure(
    bench: Bench,
    *,
    rate: float = RATE,
    interval: str = INTERVAL,
    duration: float = DURATION_S,
    changed: float = 0.0,
    workers: int = 1,
) -> list[Result]:
    """Probes for ``duration`` s under ``rate`` changes/s with ``run --interval``; with
    ``changed``, that share of the orders changes (and is synced) after the rollover first."""
    with guarded(bench, NAME, "freshness under load") as found:
        migrated(bench)
        sync_api.sync(bench.settings)
        refresh_api.refresh(bench.settings, mode="historic")  # the rollover
        prepared: dict[str, Any] = {}
        if changed:
            started = time.perf_counter()
            prepared["changed_rows"] = source.change_orders(bench, changed)
            prepared["change_s"] = time.perf_counter() - started
            started = time.perf_counter()
            sync_api.sync(bench.settings)
            prepared["sync_s"] = time.perf_counter() - started
            started = time.perf_counter()
            refresh_api.refresh(bench.settings)
            prepared["refresh_s"] = time.perf_counter() - started
            log.info("after the rollover: %s", prepared)

        runner = probe.acme(bench, "run", "--interval", interval)
        load = probe.Load(bench, rate=rate, duration=duration, workers=workers)
        try:
            waited = probe.wait_ready(runner, probe.CURSOR_READY)
            log.info("run's first cycle done after %.1f s", waited)
            with psycopg.connect(bench.source_url, autocommit=True) as src:
                load.start(src)
                probes = probe.probe(
                    bench,
                    base=PROBE_BASE,
                    duration=duration,
                    every=PROBE_EVERY_S,
                    poll=POLL_EVERY_S,
                    children=[(runner, "run")],
                    load=load,
                )
                reached = load.finish(src)
        finally:
            load.stop()
            probe.stop(runner)
        ran = cycles(probe.log_text(runner))
        delays = probes.delays
        result = Result(
            NAME,
            f"freshness: commit -> union view, simulate --rate {rate:g}, run --interval {interval}",
        )
        result.seconds = delays
        result.throughput = False
        result.rows = len(delays)
        summary = probes.summary()
        result.extra = {
            "probes": summary["probes"],
            "never_seen": summary["never_seen"],
            "p50_s": summary["p50"],
            "p95_s": summary["p95"],
            "p99_s": summary["p99"],
            "max_s": summary["max"],
            "load_mean": summary["load_mean"],
            "load_max": summary["load_max"],
            "changed_fraction": changed,
            "prepared": prepared,
            "load": reached,
            "run": cycle_spread(ran),
            "cpu_s": probes.cpu,
            "cpu_ms_per_change": probes.cpu_ms_per_change,
        }
        result.note = (
            f"{summary['probes']} probes, p50 {summary['p50']:.1f} s, p95 {summary['p95']:.1f} s"
            + (f", {summary['never_seen']} never seen" if summary["never_seen"] else "")
            if delays
            else "no probe became visible"
        )
        found.append(result)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = standalone.parser("python -m benchmarks.freshness", __doc__, orders=200_000)
    parser.add_argument("--rate", type=float, default=RATE, help="row changes per second")
    parser.add_argument("--workers", type=int, default=1, help="simulator processes")
    parser.add_argument("--interval", default=INTERVAL, help="run --interval")
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds of probes")
    parser.add_argument(
        "--changed",
        type=float,
        default=0.0,
        help="share of the orders changed (and synced) after the rollover, before the probes",
    )
    parser.add_argument("--source-db", default="acme_bench_source", help="source database")
    parser.add_argument(
        "--warehouse-db",
        default=None,
        help="reuse this synced warehouse (e.g. source_cost's cursor one) instead of a new one",
    )
    args = parser.parse_args(argv)
    bench = standalone.bench(
        standalone.server(args),
        source_db=args.source_db,
        warehouses=[] if args.warehouse_db else [f"{args.source_db}_freshness_wh"],
        orders=args.orders,
        warehouse_db=args.warehouse_db,
    )
    load_before = os.getloadavg()
    results = measure(
        bench,
        rate=args.rate,
        interval=args.interval,
        duration=args.duration,
        changed=args.changed,
        workers=args.workers,
    )
    for r in results:
        print(f"{r.name:20} {r.status:8} {r.note}")
    standalone.write(
        args.json,
        {
            "orders": args.orders,
            "rate": args.rate,
            "interval": args.interval,
            "duration_s": args.duration,
            "changed": args.changed,
            "load_before": load_before,
        },
        {r.name: r.as_dict() for r in results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
