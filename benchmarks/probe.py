"""What the latency benchmarks share: ``acme-mv`` children, the write load and the probe loop.

The probe loop (``freshness``, ``cdc``): every ``every`` seconds a probe order
is committed on the source (PENDING, a delivery date of its own far in the
future) and ``analytics.open_orders`` is polled every ``poll`` seconds; a
probe's delay is the time from its commit to the first poll that shows its
group.

The write load: ``acme-mv sample simulate`` in one or more processes, each
at ``rate / workers`` (each row change still its own transaction), or
(``writer="sql"``) the same workload from a procedure in ``workers`` source
sessions (:mod:`benchmarks.sql_writer`); the rate actually reached is read
from the source's ``pg_stat_user_tables`` (rows inserted + updated + deleted
in ``operations``), not taken on trust.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import psycopg

from benchmarks import cpu, sql_writer
from benchmarks.core import Bench

log = logging.getLogger(__name__)

#: how long probes are waited for after the last one was committed
GRACE_S = 30.0
#: how often the load average is sampled during a run
LOAD_EVERY_S = 10.0
#: how long a child may take to start its loop
READY_TIMEOUT_S = 180.0
#: the log lines that say a loop runs: a cursor cycle done, the stream started
CURSOR_READY = r"cycle \d+:"
CDC_READY = r"streaming slot"
#: how long a stopped child gets to finish its step before it is killed
STOP_TIMEOUT_S = 30.0

#: row changes on the source's tables so far (the generator's own count)
CHANGES_SQL = """
SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint
FROM pg_stat_user_tables WHERE schemaname = 'operations'
"""


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (the smallest value with at least ``q`` of them at or below)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def spread(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    return {
        "p50": percentile(values, 0.5),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
        "max": max(values),
    }


def acme(bench: Bench, *args: str) -> subprocess.Popen[bytes]:
    """``acme-mv ARGS`` in a child; its log goes to a temporary file (a pipe nobody reads
    fills up after 64 KiB of log lines and then blocks the child: the loops log every cycle)."""
    env = {
        **os.environ,
        "ACME_MV_DATABASE_URL": bench.warehouse_url,
        "ACME_MV_SOURCE_URL": bench.source_url,
    }
    log_file = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "acme_mv", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    proc.stderr = log_file  # read back with seek(0)
    return proc


def log_text(proc: subprocess.Popen[bytes]) -> str:
    """All a child has logged so far."""
    if proc.stderr is None:
        return ""
    proc.stderr.seek(0)
    return proc.stderr.read().decode(errors="replace").strip()


def wait_ready(
    proc: subprocess.Popen[bytes], pattern: str, *, timeout: float = READY_TIMEOUT_S
) -> float:
    """Wait until the child has logged a line matching ``pattern`` (its loop is running: on a
    loaded box a Python child's start-up alone can take 20 s); the seconds waited."""
    started = time.monotonic()
    while not re.search(pattern, log_text(proc)):
        if proc.poll() is not None:
            raise RuntimeError(f"the child exited {proc.returncode}: {log_text(proc)[-300:]}")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"no line matching {pattern!r} after {timeout:g} s")
        time.sleep(0.2)
    return time.monotonic() - started


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (the loops finish their step), then kill after STOP_TIMEOUT_S."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def changes_so_far(src: psycopg.Connection[Any]) -> int:
    """Row changes counted on the source's tables (statistics are flushed every second or so)."""
    src.execute("SELECT pg_stat_clear_snapshot()")
    row = src.execute(CHANGES_SQL).fetchone()
    return int(row[0]) if row else 0


@dataclass
class Load:
    """``sample simulate`` at ``rate`` in ``workers`` processes for ``duration`` seconds;
    ``writer="sql"``: the same workload from a procedure in ``workers`` source sessions
    (:mod:`benchmarks.sql_writer`)."""

    bench: Bench
    rate: float
    duration: float
    workers: int = 1
    writer: str = "python"
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    sql: sql_writer.SqlWriters | None = None
    started_at: float = 0.0
    changes_before: int = 0
    #: (monotonic time, changes so far) sampled during the run: the steady rate
    ticks: list[tuple[float, int]] = field(default_factory=list)

    def start(self, src: psycopg.Connection[Any]) -> None:
        self.changes_before = changes_so_far(src)
        self.started_at = time.monotonic()
        if self.writer == "sql":
            self.sql = sql_writer.SqlWriters(
                self.bench.source_url, self.rate, self.duration, lanes=self.workers
            )
            self.sql.start()
            return
        each = self.rate / self.workers
        self.procs = [
            acme(
                self.bench,
                "sample",
                "simulate",
                "--rate",
                f"{each:g}",
                "--duration",
                f"{self.duration:g}s",
                "--seed",
                str(worker + 1),
            )
            for worker in range(self.workers)
        ]

    def tick(self, src: psycopg.Connection[Any]) -> None:
        self.ticks.append((time.monotonic(), changes_so_far(src)))

    def steady_rate(self) -> float | None:
        """Changes per second between the second and the last tick (the first tick
        falls in the writers' start-up: a Python process and its imports)."""
        if len(self.ticks) < 3:
            return None
        (t0, c0), (t1, c1) = self.ticks[1], self.ticks[-1]
        return (c1 - c0) / (t1 - t0)

    @property
    def pids(self) -> dict[str, list[int]]:
        """The writers' processes for the CPU figures (the procedure: its source backends)."""
        if self.sql is not None:
            return {"sql writer backends": self.sql.backend_pids}
        return {"sample simulate": [proc.pid for proc in self.procs]}

    def check(self) -> None:
        if self.sql is not None and self.sql.errors:
            raise RuntimeError(f"the SQL writer failed: {self.bench.scrub(self.sql.errors[0])}")
        for proc in self.procs:
            code = proc.poll()
            if code not in (None, 0):
                raise RuntimeError(
                    f"acme-mv sample simulate exited {code}: "
                    f"{self.bench.scrub(log_text(proc)[-300:])}"
                )

    def finish(self, src: psycopg.Connection[Any]) -> dict[str, Any]:
        """Wait for the writers to end; the rate reached, from the source's statistics."""
        if self.sql is not None:
            self.sql.wait(self.duration + STOP_TIMEOUT_S)
            self.sql.stop()
        for proc in self.procs:
            try:
                proc.wait(timeout=self.duration + STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                stop(proc)
        seconds = time.monotonic() - self.started_at
        time.sleep(1.5)  # the backends' statistics reach the shared counters within a second
        changes = changes_so_far(src) - self.changes_before
        return {
            "asked_rate": self.rate,
            "workers": self.workers,
            "writer": self.writer,
            "changes": changes,
            "seconds": seconds,
            "reached_rate": changes / seconds if seconds > 0 else 0.0,
            "steady_rate": self.steady_rate(),
        }

    def stop(self) -> None:
        if self.sql is not None:
            self.sql.stop()
        for proc in self.procs:
            stop(proc)


@dataclass
class Probes:
    """Probe orders committed on the source and when each was first seen in the warehouse."""

    committed: dict[date, float] = field(default_factory=dict)
    seen: dict[date, float] = field(default_factory=dict)
    #: the 1-minute load average, sampled every LOAD_EVERY_S during the run
    loads: list[float] = field(default_factory=list)
    #: CPU seconds per process group over the steady part of the run (benchmarks.cpu),
    #: and per row change written meanwhile (milliseconds)
    cpu: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_change: dict[str, float] = field(default_factory=dict)

    @property
    def delays(self) -> list[float]:
        return [self.seen[d] - self.committed[d] for d in sorted(self.seen)]

    @property
    def never_seen(self) -> list[date]:
        return sorted(set(self.committed) - set(self.seen))

    def summary(self) -> dict[str, Any]:
        return {
            **spread(self.delays),
            "probes": len(self.committed),
            "never_seen": len(self.never_seen),
            **load_spread(self.loads),
            "cpu_s": self.cpu,
            "cpu_ms_per_change": self.cpu_ms_per_change,
        }


def load_spread(loads: Sequence[float]) -> dict[str, float | None]:
    """The box's 1-minute load average during a run: mean and max of the samples."""
    return {
        "load_mean": sum(loads) / len(loads) if loads else None,
        "load_max": max(loads) if loads else None,
    }


def postmaster(src: psycopg.Connection[Any]) -> int | None:
    """The server's pid when this machine runs it and we may read its data directory."""
    try:
        row = src.execute("SELECT current_setting('data_directory')").fetchone()
        return cpu.postmaster_pid(str(row[0])) if row else None
    except (psycopg.Error, OSError, ValueError):
        return None


def probe(
    bench: Bench,
    *,
    base: date,
    duration: float,
    every: float = 1.0,
    poll: float = 0.1,
    start_after: float = 0.0,
    children: Sequence[tuple[subprocess.Popen[bytes], str]] = (),
    load: Load | None = None,
) -> Probes:
    """Commit a probe every ``every`` s for ``duration`` s (from ``start_after`` s on), poll
    ``analytics.open_orders`` every ``poll`` s until all are seen or GRACE_S more has passed.

    A child of ``children`` or a writer of ``load`` that exits early fails the run with its
    last log line. Probes of an earlier run are deleted first, these ones at the end.
    """
    found = Probes()
    named = {what: [proc.pid] for proc, what in children}
    if load is not None:
        named.update(load.pids)
    snaps: list[tuple[cpu.Snapshot, int]] = []
    with (
        psycopg.connect(bench.source_url, autocommit=True) as src,
        psycopg.connect(bench.warehouse_url, autocommit=True) as wh,
    ):
        src.execute("DELETE FROM operations.orders WHERE delivery_date >= %s", (base,))
        postmaster_pid = postmaster(src)
        started = time.monotonic()
        next_probe = started + start_after
        next_load = started
        end = started + start_after + duration
        while True:
            now = time.monotonic()
            if now < end and now >= next_load:
                found.loads.append(os.getloadavg()[0])
                if load is not None:
                    load.tick(src)
                    snaps.append((cpu.snapshot(named, postmaster_pid), load.ticks[-1][1]))
                next_load += LOAD_EVERY_S
            if now < end and now >= next_probe:
                day = base + timedelta(days=len(found.committed))
                src.execute(
                    "INSERT INTO operations.orders (order_date, delivery_date, status) "
                    "VALUES (current_date, %s, 'PENDING')",
                    (day,),
                )
                found.committed[day] = time.monotonic()
                next_probe += every
            rows = wh.execute(
                "SELECT delivery_date FROM analytics.open_orders WHERE delivery_date >= %s",
                (base,),
            ).fetchall()
            polled = time.monotonic()
            for (day,) in rows:
                if day in found.committed and day not in found.seen:
                    found.seen[day] = polled
            if now >= end and (len(found.seen) == len(found.committed) or now > end + GRACE_S):
                break
            for proc, what in children:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"acme-mv {what} exited {proc.returncode}: "
                        f"{bench.scrub(log_text(proc)[-300:])}"
                    )
            if load is not None:
                load.check()
            time.sleep(poll)
        if len(snaps) >= 3:  # from the second sample (the writers' start-up) to the last
            (first, c0), (last, c1) = snaps[1], snaps[-1]
            found.cpu = cpu.spent(first, last)
            found.cpu_ms_per_change = {
                k: 1000 * v / max(1, c1 - c0)
                for k, v in found.cpu.items()
                if k not in {"wall", "cores"}
            }
        for day in found.never_seen:  # say what happened to them: a lost probe is a finding
            ids = [
                r[0]
                for r in src.execute(
                    "SELECT order_id FROM operations.orders WHERE delivery_date = %s", (day,)
                )
            ]
            staged = wh.execute(
                "SELECT order_id, _batch_id, status, _deleted FROM staging.orders "
                "WHERE order_id = ANY(%s)",
                (ids,),
            ).fetchall()
            log.warning(
                "probe %s (orders %s) never seen in analytics.open_orders; staged: %s",
                day,
                ids,
                staged,
            )
        src.execute("DELETE FROM operations.orders WHERE delivery_date >= %s", (base,))
    return found
