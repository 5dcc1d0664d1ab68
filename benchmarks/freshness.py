"""(8) Freshness under load: commit on the source -> visible in the union views.

``acme-mv sample simulate --rate 200`` writes steadily while
``acme-mv run --interval 5s`` syncs and refreshes. Every second the benchmark
commits a probe order on the source (PENDING, a delivery date of its own far
in the future) and polls ``analytics.open_orders`` for it; the delay of a
probe is the time from its commit to the poll that first sees its group.
p50/p95 over the probes; probes never seen are reported.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from datetime import date, timedelta

from acme_mv import sync as sync_api
from acme_mv.reports import refresh as refresh_api
from benchmarks.acme_sync import migrated
from benchmarks.core import Bench, NotAvailable, Result, guarded

NAME = "freshness"
RATE = 200
INTERVAL = "5s"
#: how long probes are committed, and how long to wait for the last ones
DURATION_S = 60.0
GRACE_S = 30.0
PROBE_EVERY_S = 1.0
POLL_EVERY_S = 0.1
PROBE_BASE = date(2100, 1, 1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[rank]


def _acme(bench: Bench, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ACME_MV_DATABASE_URL": bench.warehouse_url,
        "ACME_MV_SOURCE_URL": bench.source_url,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "acme_mv", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _has_command(bench: Bench, *args: str) -> None:
    env = {**os.environ, "ACME_MV_DATABASE_URL": bench.warehouse_url}
    done = subprocess.run(
        [sys.executable, "-m", "acme_mv", *args, "--help"], env=env, capture_output=True
    )
    if done.returncode != 0:
        raise NotAvailable(f"`acme-mv {' '.join(args)}` is not there yet")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(bench: Bench) -> list[Result]:
    with guarded(bench, "freshness", "freshness under load") as found:
        _has_command(bench, "sample", "simulate")
        _has_command(bench, "run")
        migrated(bench)
        sync_api.sync(bench.settings)
        refresh_api.refresh(bench.settings, mode="historic")

        committed: dict[date, float] = {}
        seen: dict[date, float] = {}
        simulator = _acme(bench, "sample", "simulate", "--rate", str(RATE))
        runner = _acme(bench, "run", "--interval", INTERVAL)
        try:
            with bench.connect("source") as src, bench.connect("warehouse") as wh:
                started = time.monotonic()
                next_probe = started
                while True:
                    now = time.monotonic()
                    if now - started < DURATION_S and now >= next_probe:
                        day = PROBE_BASE + timedelta(days=len(committed))
                        src.execute(
                            "INSERT INTO operations.orders (order_date, delivery_date, status) "
                            "VALUES (current_date, %s, 'PENDING')",
                            (day,),
                        )
                        committed[day] = time.monotonic()
                        next_probe += PROBE_EVERY_S
                    rows = wh.execute(
                        "SELECT delivery_date FROM analytics.open_orders WHERE delivery_date >= %s",
                        (PROBE_BASE,),
                    ).fetchall()
                    polled = time.monotonic()
                    for (day,) in rows:
                        if day in committed and day not in seen:
                            seen[day] = polled
                    if now - started >= DURATION_S and (
                        len(seen) == len(committed) or now - started > DURATION_S + GRACE_S
                    ):
                        break
                    for proc, what in ((simulator, "sample simulate"), (runner, "run")):
                        if proc.poll() is not None:
                            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                            raise RuntimeError(
                                f"acme-mv {what} exited {proc.returncode}: {bench.scrub(err.strip()[-300:])}"
                            )
                    time.sleep(POLL_EVERY_S)
                src.execute(
                    "DELETE FROM operations.orders WHERE delivery_date >= %s", (PROBE_BASE,)
                )
        finally:
            _stop(runner)
            _stop(simulator)
        delays = [seen[d] - committed[d] for d in sorted(seen)]
        result = Result(
            "freshness",
            f"freshness: commit -> union view, simulate --rate {RATE}, run --interval {INTERVAL}",
        )
        result.seconds = delays
        result.throughput = False
        result.rows = len(delays)
        result.extra = {
            "probes": len(committed),
            "never_seen": len(committed) - len(seen),
            "p50_s": percentile(delays, 0.5) if delays else None,
            "p95_s": percentile(delays, 0.95) if delays else None,
        }
        result.note = (
            f"{len(committed)} probes, p50 {result.extra['p50_s']:.1f} s, p95 {result.extra['p95_s']:.1f} s"
            + (f", {result.extra['never_seen']} never seen" if result.extra["never_seen"] else "")
            if delays
            else "no probe became visible"
        )
        found.append(result)
    return found
