"""(10) What reading the changes costs the source: cursor syncs against change capture.

The source is the benchmark's sample at ``--orders`` without the
``updated_at`` indexes (the production DDL has none; they are dropped first
and built again at the end unless ``--keep-dropped``). Three stretches of
``--seconds`` each, all under the same write load (``acme-mv sample simulate
--rate R``):

1. ``writes``: the load alone (what the writers themselves read: their
   random picks and today's orders);
2. ``cursor``: ``acme-mv run --interval I`` (the warehouse synced and
   folded before the stretch starts);
3. ``cdc``: ``acme-mv run --cdc`` (after ``acme-mv cdc setup``, whose
   initial copy is not counted).

For each stretch, the difference of the source's ``pg_statio_user_tables``
(heap and index blocks, hit and read) and ``pg_stat_user_tables`` (sequential
scans, tuples they read, index scans, tuples fetched) over the four
``operations`` tables, per minute; a reader's own cost is its stretch less
``writes``. The WAL written and the CPU of each process group (the walsender
decodes the WAL: that is change capture's cost on the source) are beside it.

    python -m benchmarks.source_cost --orders 1000000 --rate 200 --seconds 180
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from acme_mv import cdc as cdc_api
from acme_mv import migrate
from acme_mv import sync as sync_api
from acme_mv.reports import refresh as refresh_api
from acme_mv.sample import schema
from benchmarks import cpu, freshness, pg, probe, standalone
from benchmarks.core import Bench

log = logging.getLogger(__name__)

RATE = 200
SECONDS = 180.0
INTERVAL = "10s"
#: the source's counters, summed over the operations tables
COUNTERS_SQL: LiteralString = """
SELECT coalesce(sum(io.heap_blks_hit), 0)::bigint, coalesce(sum(io.heap_blks_read), 0)::bigint,
       coalesce(sum(io.idx_blks_hit), 0)::bigint, coalesce(sum(io.idx_blks_read), 0)::bigint,
       coalesce(sum(io.toast_blks_hit), 0)::bigint, coalesce(sum(io.toast_blks_read), 0)::bigint,
       coalesce(sum(st.seq_scan), 0)::bigint, coalesce(sum(st.seq_tup_read), 0)::bigint,
       coalesce(sum(st.idx_scan), 0)::bigint, coalesce(sum(st.idx_tup_fetch), 0)::bigint,
       coalesce(sum(st.n_tup_ins + st.n_tup_upd + st.n_tup_del), 0)::bigint,
       pg_current_wal_lsn()
FROM pg_statio_user_tables io JOIN pg_stat_user_tables st USING (relid)
WHERE io.schemaname = 'operations'
"""
COUNTERS = (
    "heap_blks_hit",
    "heap_blks_read",
    "idx_blks_hit",
    "idx_blks_read",
    "toast_blks_hit",
    "toast_blks_read",
    "seq_scan",
    "seq_tup_read",
    "idx_scan",
    "idx_tup_fetch",
    "row_changes",
)
#: the indexes that acme-mv's sample adds and the production DDL lacks
UPDATED_AT_INDEX = "{table}_updated_at_idx"
#: statistics reach the shared counters within a second of a backend's last report
STATS_SETTLE_S = 1.5


def counters(src: psycopg.Connection[Any]) -> dict[str, Any]:
    time.sleep(STATS_SETTLE_S)
    src.execute("SELECT pg_stat_clear_snapshot()")
    row = src.execute(COUNTERS_SQL).fetchone()
    assert row is not None
    return {**dict(zip(COUNTERS, (int(v) for v in row[:-1]), strict=True)), "lsn": str(row[-1])}


def _difference(
    src: psycopg.Connection[Any], before: dict[str, Any], after: dict[str, Any], seconds: float
) -> dict[str, Any]:
    row = src.execute(
        "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint", (after["lsn"], before["lsn"])
    ).fetchone()
    per_min = 60.0 / seconds
    out: dict[str, Any] = {"seconds": seconds, "wal_bytes": int(row[0]) if row else None}
    for key in COUNTERS:
        out[key] = after[key] - before[key]
        out[f"{key}_per_min"] = out[key] * per_min
    out["blocks_per_min"] = sum(
        out[f"{k}_per_min"]
        for k in ("heap_blks_hit", "heap_blks_read", "idx_blks_hit", "idx_blks_read")
    )
    return out


def own_cost(writes: dict[str, Any], reader: dict[str, Any]) -> dict[str, float]:
    """A reader's own cost per minute: its stretch less what the writers read for as many
    row changes as were written in it (the ``writes`` stretch's cost per change)."""
    out = {}
    for key in (*COUNTERS[:-1], "blocks"):
        per_change = writes[f"{key}_per_min"] / (writes["row_changes_per_min"] or 1)
        out[f"{key}_per_min"] = (
            reader[f"{key}_per_min"] - per_change * reader["row_changes_per_min"]
        )
    return out


def drop_cursor_indexes(src: psycopg.Connection[Any]) -> list[str]:
    dropped = []
    for table in schema.TABLES:
        name = UPDATED_AT_INDEX.format(table=table)
        if src.execute("SELECT to_regclass(%s)", (f"operations.{name}",)).fetchone() != (None,):
            src.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier("operations", name)))
            dropped.append(name)
    return dropped


def restore_cursor_indexes(src: psycopg.Connection[Any]) -> None:
    for table in schema.TABLES:
        src.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (updated_at)").format(
                sql.Identifier(UPDATED_AT_INDEX.format(table=table)),
                sql.Identifier("operations", table),
            )
        )


def stretch(
    bench: Bench,
    what: str,
    *,
    rate: float,
    seconds: float,
    reader: list[str] | None,
    writer: str = "python",
) -> dict[str, Any]:
    """``seconds`` of writes at ``rate`` with ``acme-mv READER...`` alongside (None: writes
    only)."""
    runner = probe.acme(bench, *reader) if reader else None
    load = probe.Load(bench, rate=rate, duration=seconds, writer=writer)
    with psycopg.connect(bench.source_url, autocommit=True) as src:
        try:
            if runner is not None:  # its start-up (imports, connections, the slot) not counted
                probe.wait_ready(runner, probe.CDC_READY if what == "cdc" else probe.CURSOR_READY)
            postmaster = probe.postmaster(src)
            named = {"sample simulate": [], **({what: [runner.pid]} if runner else {})}
            before = counters(src)
            started = time.monotonic()
            load.start(src)
            del named["sample simulate"]
            named.update(load.pids)
            cpu_before = cpu.snapshot(named, postmaster)
            loads: list[float] = []
            while time.monotonic() - started < seconds:
                time.sleep(
                    min(probe.LOAD_EVERY_S, max(0.1, seconds - (time.monotonic() - started)))
                )
                loads.append(os.getloadavg()[0])
                load.tick(src)
                load.check()
                if runner is not None and runner.poll() is not None:
                    raise RuntimeError(
                        f"acme-mv {what} exited {runner.returncode}: "
                        f"{bench.scrub(probe.log_text(runner)[-300:])}"
                    )
            cpu_after = cpu.snapshot(named, postmaster)
            elapsed = time.monotonic() - started
            after = counters(src)
            reached = load.finish(src)
        finally:
            load.stop()
            if runner is not None:
                probe.stop(runner)
        out = _difference(src, before, after, elapsed)
    out["load"] = reached
    out.update(probe.load_spread(loads))
    out["cpu_s"] = cpu.spent(cpu_before, cpu_after)
    if runner is not None and what == "cursor":
        ran = freshness.cycles(probe.log_text(runner))
        out["run"] = freshness.cycle_spread(ran)
        if ran:
            out["blocks_per_cycle"] = out["blocks_per_min"] * elapsed / 60.0 / len(ran)
    log.info(
        "%s: %.0f blocks/min, %d seq scans, %d tuples read by them, %.0f changes/s, load %.1f",
        what,
        out["blocks_per_min"],
        out["seq_scan"],
        out["seq_tup_read"],
        reached["reached_rate"],
        out["load_mean"] or 0.0,
    )
    return out


def measure(
    bench: Bench,
    *,
    cdc_warehouse_url: str,
    rate: float,
    seconds: float,
    interval: str,
    keep_dropped: bool,
    writer: str = "python",
) -> dict[str, Any]:
    """The three stretches; the cursor mode uses ``bench``'s warehouse, change capture
    the one at ``cdc_warehouse_url`` (both are set up here, outside the stretches)."""
    found: dict[str, Any] = {}
    cdc_bench = Bench(
        source_url=bench.source_url,
        warehouse_url=cdc_warehouse_url,
        orders=bench.orders,
        rounds=1,
        server_url=bench.server_url,
    )
    with psycopg.connect(bench.source_url, autocommit=True) as src:
        found["dropped_indexes"] = drop_cursor_indexes(src)
    try:
        found["writes"] = stretch(
            bench, "writes", rate=rate, seconds=seconds, reader=None, writer=writer
        )

        migrate.upgrade(bench.warehouse_url)
        started = time.perf_counter()
        sync_api.sync(bench.settings)
        refresh_api.refresh(bench.settings, mode="historic")
        found["cursor_initial_s"] = time.perf_counter() - started
        found["cursor"] = stretch(
            bench,
            "cursor",
            rate=rate,
            seconds=seconds,
            reader=["run", "--interval", interval],
            writer=writer,
        )

        migrate.upgrade(cdc_bench.warehouse_url)
        slot = f"acme_cost_{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        cdc_api.setup(cdc_bench.settings, slot=slot, publication=f"{slot}_pub")
        refresh_api.refresh(cdc_bench.settings, mode="historic")
        found["cdc_initial_s"] = time.perf_counter() - started
        try:
            found["cdc"] = stretch(
                cdc_bench,
                "cdc",
                rate=rate,
                seconds=seconds,
                reader=["run", "--cdc", "--slot", slot],
                writer=writer,
            )
        finally:
            cdc_api.drop(cdc_bench.settings, slot=slot)
    finally:
        if not keep_dropped:
            with psycopg.connect(bench.source_url, autocommit=True) as src:
                restore_cursor_indexes(src)
    for what in ("cursor", "cdc"):
        found[f"{what}_own"] = own_cost(found["writes"], found[what])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = standalone.parser("python -m benchmarks.source_cost", __doc__, orders=1_000_000)
    parser.add_argument("--rate", type=float, default=RATE, help="row changes per second")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="each stretch")
    parser.add_argument("--interval", default=INTERVAL, help="the cursor mode's run --interval")
    parser.add_argument("--source-db", default="acme_bench_source")
    parser.add_argument(
        "--keep-dropped", action="store_true", help="leave the updated_at indexes dropped"
    )
    parser.add_argument(
        "--writer",
        choices=("python", "sql"),
        default="python",
        help="the write load: acme-mv sample simulate, or the same workload from a procedure "
        "on the source (benchmarks/sql_writer.py: no look-ups of today's orders per job)",
    )
    args = parser.parse_args(argv)
    cursor_db, cdc_db = f"{args.source_db}_cost_cursor_wh", f"{args.source_db}_cost_cdc_wh"
    server = standalone.server(args)
    bench = standalone.bench(
        server, source_db=args.source_db, warehouses=[cursor_db, cdc_db], orders=args.orders
    )
    load_before = os.getloadavg()
    found = measure(
        bench,
        cdc_warehouse_url=pg.with_db(server, cdc_db),
        rate=args.rate,
        seconds=args.seconds,
        interval=args.interval,
        keep_dropped=args.keep_dropped,
        writer=args.writer,
    )
    for what in ("writes", "cursor", "cdc"):
        s = found[what]
        print(
            f"{what:8} {s['blocks_per_min']:>14,.0f} blocks/min  "
            f"{s['seq_scan_per_min']:>6.1f} seq scans/min  "
            f"{s['seq_tup_read_per_min']:>14,.0f} tuples/min by seq scans  "
            f"load {s['load_mean'] or 0:.1f}"
        )
    standalone.write(
        args.json,
        {
            "orders": args.orders,
            "rate": args.rate,
            "seconds": args.seconds,
            "interval": args.interval,
            "writer": args.writer,
            "load_before": load_before,
        },
        found,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
