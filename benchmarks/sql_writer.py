"""The write load as a server-side procedure (``benchmarks/sql/simulate.sql``).

``acme-mv sample simulate`` costs 0.3-1 ms of CPU per row change between its
Python process and its look-ups on the source: on a 2-core box it cannot write
2,000 changes/s and leave a core to what is being measured. The procedure
writes the same workload (the same jobs, proportions and statements, each row
change its own transaction) from inside the source's backends, so what the
writers cost is only the writes themselves. It runs in ``lanes`` sessions, one
per thread here (each blocked in its ``CALL``), lane ``k`` writing the
customers with ``customer_id % lanes = k``.

Stopping: the lanes stop between chunks, and the CALL in progress is cancelled
(``pg_cancel_backend``): a backend busy in a PL/pgSQL loop does not notice that
its client went away.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from acme_mv.sample import simulate

PROCEDURE = Path(__file__).with_name("sql") / "simulate.sql"
APPLICATION = "acme_bench_writer"
#: seconds per CALL (the schedule restarts with each; the statistics are flushed between)
CHUNK_S = 5.0
CALL = """
CALL acme_bench.simulate(
    rate => %(rate)s, seconds => %(seconds)s, seed => %(seed)s, lane => %(lane)s,
    lanes => %(lanes)s, w_customers => %(w_customers)s, w_products => %(w_products)s,
    w_orders => %(w_orders)s, insert_share => %(insert_share)s, items_min => %(items_min)s,
    items_max => %(items_max)s, job_user => %(job_user)s, statuses => %(statuses)s)
"""


def install(conn: psycopg.Connection[Any]) -> None:
    """Create (or replace) ``acme_bench.simulate`` on the source."""
    conn.execute(PROCEDURE.read_text().encode())  # a file of this repository


def uninstall(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DROP SCHEMA IF EXISTS acme_bench CASCADE")


def params(
    *, rate: float, seconds: float, lane: int, lanes: int, chunk: int = 0
) -> dict[str, object]:
    """One lane's arguments for one chunk: the sample's constants, so both writers stay one
    workload, and a seed of the lane's and chunk's own (setseed takes -1..1): a chunk that
    started from the same seed as the one before would repeat its picks."""
    return {
        "rate": rate,
        "seconds": seconds,
        "seed": random.Random(f"{lane}/{lanes}/{chunk}").uniform(-1.0, 1.0),
        "lane": lane,
        "lanes": lanes,
        "w_customers": simulate.JOB_WEIGHTS["customers"],
        "w_products": simulate.JOB_WEIGHTS["products"],
        "w_orders": simulate.JOB_WEIGHTS["orders"],
        "insert_share": simulate.INSERT_SHARE,
        "items_min": simulate.ITEMS_PER_ORDER[0],
        "items_max": simulate.ITEMS_PER_ORDER[1],
        "job_user": simulate.JOB_USER,
        "statuses": list(simulate.OPEN_STATUSES_AFTER_PENDING),
    }


@dataclass
class SqlWriters:
    """``lanes`` sessions running the procedure at ``rate / lanes`` each for ``seconds``."""

    url: str
    rate: float
    seconds: float
    lanes: int = 1
    conns: list[psycopg.Connection[Any]] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            install(conn)
        for lane in range(self.lanes):
            conn = psycopg.connect(self.url, autocommit=True, application_name=APPLICATION)
            self.conns.append(conn)
            thread = threading.Thread(target=self._calls, args=(conn, lane), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _calls(self, conn: psycopg.Connection[Any], lane: int) -> None:
        """CALL in chunks of CHUNK_S until the time is up or :meth:`stop`: a backend flushes
        its table statistics (what the benchmarks count changes by) only between
        statements, not at a COMMIT inside one. What the procedure knows about today's
        orders stays in the session's temp tables from one chunk to the next."""
        deadline = time.monotonic() + self.seconds
        chunk = 0
        try:
            while not self.stopping.is_set() and (left := deadline - time.monotonic()) > 0.05:
                args = params(
                    rate=self.rate / self.lanes,
                    seconds=min(CHUNK_S, left),
                    lane=lane,
                    lanes=self.lanes,
                    chunk=chunk,
                )
                conn.execute(CALL, args)
                chunk += 1
        except psycopg.errors.QueryCanceled:
            if not self.stopping.is_set():
                self.errors.append("a writer's CALL was cancelled by someone else")
        except psycopg.Error as exc:
            self.errors.append(str(exc).splitlines()[0])

    @property
    def backend_pids(self) -> list[int]:
        return [conn.info.backend_pid for conn in self.conns]

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)

    def wait(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout)

    def stop(self) -> None:
        """Stop the lanes (between chunks, or by cancelling the CALL in progress), close
        their sessions, drop the procedure; once (``Load.finish`` and ``Load.stop`` both
        call it)."""
        if self.stopping.is_set() and not self.conns:
            return
        self.stopping.set()
        while self.running():
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_cancel_backend(pid) FROM unnest(%s::int[]) pid",
                    (self.backend_pids,),
                )
            self.wait(1.0)
        for conn in self.conns:
            conn.close()
        self.conns.clear()
        with psycopg.connect(self.url, autocommit=True) as conn:
            uninstall(conn)
