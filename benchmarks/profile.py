"""Where a sync and a refresh spend their time: per statement, per phase (not timed as a target).

One cycle as in ``refresh_growth`` (1% of the orders move between open and closed, 0.5% new
open orders with 26 items), then ``sync`` and ``refresh --current`` with every statement's
duration captured from acme-mv's own DEBUG statement log (:class:`acme_mv.db.TaggedCursor`),
grouped by statement. Also timed on their own: a connect, ``require_head``, the source's
incremental scan of each append-only table, and ``EXPLAIN (ANALYZE, BUFFERS)`` of the refresh's
``INSERT ... ON CONFLICT`` statements (in a transaction that is rolled back).
"""

from __future__ import annotations

import logging
import re
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg import sql

from acme_mv import db, migrate
from acme_mv import sync as sync_api
from acme_mv.reports import refresh as refresh_api
from acme_mv.staging.tables import TABLES
from acme_mv.sync import source as sync_source
from benchmarks import refresh_growth
from benchmarks.core import Bench, Result, guarded, timed
from benchmarks.one_percent import ready, timed_refresh

NAME = "profile"
#: cycles profiled (the first warms the caches of a fresh warehouse)
CYCLES = 3
#: repetitions of the small fixed costs (connect, require_head)
REPEAT = 5


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.statements: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "%.3f s  %s" and isinstance(record.args, tuple):
            seconds, text = record.args
            if isinstance(seconds, int | float):
                self.statements.append((float(seconds), str(text)))


@contextmanager
def statements() -> Iterator[list[tuple[float, str]]]:
    """Collect (seconds, statement) of every statement acme-mv runs inside the block."""
    logger = logging.getLogger("acme_mv.db")
    handler = _Collect()
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield handler.statements
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


_NUMBERS = re.compile(r"\b\d+\b")


def label(text: str, width: int = 110) -> str:
    """A statement's text without its numbers (batch ids), shortened: one label per statement."""
    return _NUMBERS.sub("N", " ".join(text.split()))[:width]


def grouped(found: list[tuple[float, str]]) -> list[dict[str, Any]]:
    """Statements in first-run order with their summed seconds and counts."""
    out: dict[str, dict[str, Any]] = {}
    for seconds, text in found:
        entry = out.setdefault(label(text), {"statement": label(text), "seconds": 0.0, "calls": 0})
        entry["seconds"] += seconds
        entry["calls"] += 1
    return list(out.values())


def _fixed_costs(bench: Bench) -> dict[str, float]:
    url = bench.warehouse_url
    connects = [timed(lambda: db.connect(url, role="warehouse", autocommit=True).close())]
    connects += [
        timed(lambda: db.connect(url, role="warehouse", autocommit=True).close())
        for _ in range(REPEAT - 1)
    ]
    with db.connect(url, role="warehouse", autocommit=True) as conn:
        heads = [timed(lambda: migrate.require_head(conn)) for _ in range(REPEAT)]
        trips = [timed(lambda: conn.execute("SELECT 1")) for _ in range(REPEAT * 4)]
    return {
        "connect_s": statistics.median(connects),
        "require_head_s": statistics.median(heads),
        "require_head_first_s": heads[0],
        "round_trip_s": statistics.median(trips),
    }


def _source_scans(bench: Bench) -> dict[str, float]:
    """The incremental read of each append-only table at its staged cursor, on the source only."""
    out: dict[str, float] = {}
    with bench.connect("warehouse") as wh:
        cursors = {
            str(t): c
            for t, c in wh.execute(
                "SELECT table_name, cursor_value FROM staging.sync_state"
            ).fetchall()
        }
    with bench.connect("source") as src:
        for name in ("orders", "order_items", "customers", "products"):
            spec = TABLES[name]
            since = cursors.get(name) if spec.kind == "append" else None
            query = sync_source.select_rows(spec, since)
            row = src.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(query)).fetchone()
            assert row is not None
            plan = row[0][0]
            out[f"{name}_scan_s"] = float(plan["Execution Time"]) / 1000
            out[f"{name}_scan_rows"] = float(plan["Plan"]["Actual Rows"])
    return out


def _explain_refresh(bench: Bench) -> list[dict[str, Any]]:
    """EXPLAIN (ANALYZE, BUFFERS) of the refresh's INSERTs for the batches not yet refreshed."""
    out: list[dict[str, Any]] = []
    with bench.connect("warehouse", autocommit=False) as conn:
        row = conn.execute(
            "SELECT coalesce(refreshed_batch_id, historic_batch_id, 0), "
            "(SELECT max(batch_id) FROM staging.sync_batches) FROM analytics.snapshot"
        ).fetchone()
        assert row is not None
        since, upto = row
        for s in refresh_api.SUMMARIES:
            statement = sql.SQL(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
                "INSERT INTO {current} AS c ({cols}, n) "
                "SELECT {cols}, sum(d.n) FROM {delta} AS d "
                "WHERE d.batch_id > %(since)s AND d.batch_id <= %(upto)s GROUP BY {cols} "
                "ON CONFLICT ({cols}) DO UPDATE SET n = c.n + EXCLUDED.n"
            ).format(current=s.table("current"), delta=s.table("delta"), cols=s.columns)
            plan = conn.execute(statement, {"since": since, "upto": upto}).fetchone()
            assert plan is not None
            top = plan[0][0]
            out.append(
                {
                    "summary": s.name,
                    "planning_s": float(top["Planning Time"]) / 1000,
                    "execution_s": float(top["Execution Time"]) / 1000,
                    "rows": top["Plan"]["Plans"][0].get("Actual Rows"),
                    "shared_hit": top["Plan"].get("Shared Hit Blocks"),
                    "shared_read": top["Plan"].get("Shared Read Blocks"),
                    "conflicts": top["Plan"].get("Conflicting Tuples"),
                }
            )
        conn.rollback()
    return out


def measure(bench: Bench) -> list[Result]:
    with guarded(bench, NAME, "profile of one sync and one refresh --current") as found:
        ready(bench)
        cycles: list[dict[str, Any]] = []
        for cycle in range(CYCLES):
            refresh_growth.change(bench, 100 + cycle)
            scans = _source_scans(bench)
            with statements() as synced:
                sync_s = timed(lambda: sync_api.sync(bench.settings))
            explained = _explain_refresh(bench)
            with statements() as refreshed:
                done = timed_refresh(bench, "current")
            with statements() as idle_statements:
                idle = timed_refresh(bench, "current")
            cycles.append(
                {
                    "sync_s": sync_s,
                    "sync_statements_s": sum(s for s, _ in synced),
                    "sync": grouped(synced),
                    "source_scans": scans,
                    "refresh_s": done.total_seconds,
                    "refresh_statements_s": sum(s for s, _ in refreshed),
                    "refresh": grouped(refreshed),
                    "refresh_delta_rows": done.delta_rows,
                    "explain": explained,
                    "idle_refresh_s": idle.total_seconds,
                    "idle_refresh": grouped(idle_statements),
                }
            )
            time.sleep(0.1)
        fixed = _fixed_costs(bench)
        result = Result(NAME, "profile of one sync and one refresh --current", throughput=False)
        result.seconds = [c["refresh_s"] for c in cycles]
        result.extra = {"cycles": cycles, "fixed": fixed}
        last = cycles[-1]
        result.note = (
            f"refresh {last['refresh_s'] * 1000:.1f} ms "
            f"({last['refresh_statements_s'] * 1000:.1f} ms "
            f"in statements), idle refresh {last['idle_refresh_s'] * 1000:.1f} ms; sync "
            f"{last['sync_s']:.2f} s ({last['sync_statements_s']:.2f} s in statements); connect "
            f"{fixed['connect_s'] * 1000:.1f} ms, "
            f"require_head {fixed['require_head_s'] * 1000:.1f} ms"
        )
        found.append(result)
    return found
