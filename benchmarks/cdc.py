"""(9) Change capture: decode rate, apply rate, capture lag and commit-to-report latency.

Four figures, all on the benchmark's source and warehouse (small scales only on
a shared machine):

1. ``cdc.decode``: the library choice. One burst of row changes is read from a
   fresh pgoutput slot twice: streamed over psycopg2's replication protocol and
   decoded by ``acme_mv.cdc.pgoutput``, and polled over psycopg 3 with
   ``pg_logical_slot_peek_binary_changes`` (the no-new-dependency option) and
   decoded the same way. Changes per second for each.
2. ``cdc.apply``: the same burst applied by ``acme_mv.cdc.stream`` (decode +
   warehouse batches, no refresh): changes per second end to end.
3. ``cdc.lag``: ``acme-mv sample simulate --rate R`` writes for D seconds (in
   ``--workers`` processes, each at R / workers; the rate reached is read from
   the source's statistics) while ``acme-mv run --cdc`` streams and refreshes;
   capture lag per staged version = its batch's commit time in the warehouse
   (``sync_batches.finished_at``) minus the source row's ``updated_at`` (its
   transaction's start). p50/p95/p99 over the run and per minute.
4. ``cdc.catchup``: CATCHUP_TRANSACTIONS single-row source transactions committed while
   nothing streams, then ``acme_mv.cdc.stream`` (batches, refresh) started: the time until
   the slot has confirmed the source's position after them; changes per second.
5. ``cdc.e2e``: during the same run a probe order (PENDING, its own far-future
   delivery date) is committed on the source every second; its latency is the
   time to the first poll (every 20 ms) of ``analytics.open_orders`` that shows
   it (:mod:`benchmarks.probe`). p50/p95/p99.

Standalone (its own databases on the embedded server, or on --database-url)::

    python -m benchmarks.cdc --orders 20000 --rate 2000 --workers 3 --duration 600
    python -m benchmarks.cdc --orders 20000 --rate 2000 --writer sql --duration 600 --no-rates
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from datetime import date
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from acme_mv import cdc as cdc_api
from acme_mv import migrate
from acme_mv.cdc import pgoutput
from benchmarks import probe, standalone
from benchmarks.core import Bench, Result, guarded

log = logging.getLogger(__name__)

NAME = "cdc"
RATE = 200
DURATION_S = 60.0
PROBE_EVERY_S = 1.0
POLL_EVERY_S = 0.02
PROBE_BASE = date(2200, 1, 1)
#: the burst for the decode and apply rates: transactions x rows each
BURST_TRANSACTIONS = 200
BURST_ROWS = 250
#: the catch-up backlog: single-row transactions committed while nothing streams
CATCHUP_TRANSACTIONS = 100_000


def _burst(url: str) -> int:
    """Update BURST_ROWS order items in each of BURST_TRANSACTIONS transactions; returns the
    changes."""
    with psycopg.connect(url) as conn:
        top = conn.execute("SELECT max(order_item_id) FROM operations.order_items").fetchone()
        assert top is not None and top[0] is not None
        conn.execute(
            "SET synchronous_commit = on"
        )  # flushed at once: the SQL interface reads flushed WAL only
        changes = 0
        for i in range(BURST_TRANSACTIONS):
            low = (i * BURST_ROWS) % max(int(top[0]) - BURST_ROWS, 1)
            changes += conn.execute(
                "UPDATE operations.order_items "
                "SET quanity = coalesce(quanity, 0) + 1, updated_at = CURRENT_TIMESTAMP(3) "
                "WHERE order_item_id > %s AND order_item_id <= %s",
                (low, low + BURST_ROWS),
            ).rowcount
            conn.commit()
    return changes


def _decode_rates(bench: Bench) -> tuple[Result, Result]:
    """Changes/s over the replication protocol (psycopg2) and by polling SQL (psycopg 3)."""
    import select

    from acme_mv.cdc import replication

    slot = f"acme_bench_{uuid.uuid4().hex[:8]}"
    publication = cdc_api.DEFAULT_PUBLICATION
    with psycopg.connect(bench.source_url, autocommit=True) as src:
        if not src.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)
        ).fetchone():
            src.execute(
                f"CREATE PUBLICATION {publication} FOR TABLE operations.customers, "  # noqa: S608
                "operations.products, operations.orders, operations.order_items"
            )
        src.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        try:
            changes = _burst(bench.source_url)
            end = src.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            assert end is not None
            target = pgoutput.lsn_from_str(str(end[0]))
            # polling: the SQL interface decodes from the slot on every call (peek: nothing
            # consumed)
            started = time.perf_counter()
            seen = 0
            with src.cursor() as cur:
                cur.execute(
                    "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, "
                    "'proto_version', '1', 'publication_names', %s)",
                    (slot, publication),
                )
                for (data,) in cur:
                    if isinstance(pgoutput.decode(bytes(data)), pgoutput.Update):
                        seen += 1
            polled_s = time.perf_counter() - started
            assert seen == changes, (seen, changes)
            # streaming over psycopg2
            repl = replication.connect(bench.source_url)
            try:
                cur2 = repl.cursor()
                started = time.perf_counter()
                cur2.start_replication(
                    slot_name=slot,
                    decode=False,
                    options={"proto_version": "1", "publication_names": publication},
                )
                seen = 0
                while seen < changes:
                    msg = cur2.read_message()
                    if msg is None:
                        select.select([cur2], [], [], 1.0)
                        continue
                    if isinstance(pgoutput.decode(msg.payload), pgoutput.Update):
                        seen += 1
                streamed_s = time.perf_counter() - started
            finally:
                repl.close()
            log.info(
                "decode: %d changes, stream %.2f s, poll %.2f s (up to %s)",
                changes,
                streamed_s,
                polled_s,
                target,
            )
        finally:
            for _ in range(100):
                try:
                    src.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    break
                except psycopg.errors.ObjectInUse:
                    time.sleep(0.1)
    stream = Result("cdc.decode.stream", "cdc: receive + decode, psycopg2 replication protocol")
    stream.seconds, stream.rows = [streamed_s], changes
    stream.note = f"{changes / streamed_s:,.0f} changes/s"
    poll = Result(
        "cdc.decode.poll",
        "cdc: receive + decode, psycopg 3 polling pg_logical_slot_peek_binary_changes",
    )
    poll.seconds, poll.rows = [polled_s], changes
    poll.note = f"{changes / polled_s:,.0f} changes/s"
    return stream, poll


def _apply_rate(bench: Bench, slot: str) -> Result:
    """The burst streamed and applied in warehouse batches (no refresh)."""
    changes = _burst(bench.source_url)
    with psycopg.connect(bench.source_url) as src:
        row = src.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    target = pgoutput.lsn_from_str(str(row[0]))
    stop = threading.Event()
    applied: list[int] = []

    def on_batch(result: cdc_api.BatchResult) -> None:
        applied.append(result.changes)
        if pgoutput.lsn_from_str(result.lsn) >= target or sum(applied) >= changes:
            stop.set()

    started = time.perf_counter()
    cdc_api.stream(
        bench.settings,
        slot=slot,
        refresh_views=False,
        heartbeat_s=0.2,
        stop=stop,
        on_batch=on_batch,
    )
    seconds = time.perf_counter() - started
    result = Result("cdc.apply", "cdc: stream + decode + apply in warehouse batches (no refresh)")
    result.seconds, result.rows = [seconds], sum(applied)
    result.note = (
        f"{sum(applied):,} changes in {len(applied)} batches, "
        f"{sum(applied) / seconds:,.0f} changes/s"
    )
    return result


def _catch_up(bench: Bench, slot: str, transactions: int = CATCHUP_TRANSACTIONS) -> Result:
    """A backlog of single-row transactions, then the stream (batches and refresh) until the
    slot has confirmed the source's position after them."""
    with psycopg.connect(bench.source_url, autocommit=True) as src:
        src.execute("SET synchronous_commit = off")  # the backlog's cost is not measured
        src.execute(
            sql.SQL(
                """
                DO $$
                DECLARE first bigint := (SELECT min(order_id) FROM operations.orders);
                        n bigint := (SELECT count(*) FROM operations.orders);
                BEGIN
                    FOR i IN 0 .. {transactions} - 1 LOOP
                        UPDATE operations.orders
                           SET status = CASE WHEN status = 'PENDING' THEN 'PROCESSING'
                                             ELSE 'PENDING' END,
                               updated_at = localtimestamp(3)
                         WHERE order_id = first + i % n;
                        COMMIT;
                    END LOOP;
                END $$
                """
            ).format(transactions=sql.Literal(transactions))
        )
        row = src.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    target = pgoutput.lsn_from_str(str(row[0]))
    stop = threading.Event()
    applied: list[int] = []
    confirmed_at: list[float] = []

    def watch() -> None:
        with psycopg.connect(bench.source_url, autocommit=True) as src:
            while not stop.is_set():
                got = src.execute(
                    "SELECT confirmed_flush_lsn::text FROM pg_replication_slots"
                    " WHERE slot_name = %s",
                    (slot,),
                ).fetchone()
                if got and got[0] and pgoutput.lsn_from_str(str(got[0])) >= target:
                    confirmed_at.append(time.perf_counter())
                    stop.set()
                time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    started = time.perf_counter()
    watcher.start()
    cdc_api.stream(
        bench.settings,
        slot=slot,
        refresh_views=True,
        heartbeat_s=0.2,
        stop=stop,
        on_batch=lambda b: applied.append(b.changes),
    )
    watcher.join()
    seconds = (confirmed_at[0] if confirmed_at else time.perf_counter()) - started
    result = Result(
        "cdc.catchup",
        f"cdc: catch-up after {transactions:,} single-row source transactions "
        "(stream, batches, refresh; until the slot confirmed the source's position)",
        target=">= 25,000 changes/s",
    )
    result.seconds, result.rows = [seconds], transactions
    result.met = transactions / seconds >= 25_000
    result.note = (
        f"{transactions:,} transactions, {sum(applied):,} changes applied in "
        f"{len(applied)} batches, {transactions / seconds:,.0f} changes/s"
    )
    return result


#: capture lag per staged version: its batch's warehouse commit minus the source row's
#: ``updated_at`` (its transaction's start, local time); percentiles overall and per minute
LAG_SQL: LiteralString = """
WITH v AS (
    SELECT _batch_id, updated_at FROM staging.orders WHERE _batch_id >= %(b)s AND NOT _deleted
    UNION ALL
    SELECT _batch_id, updated_at FROM staging.order_items WHERE _batch_id >= %(b)s AND NOT _deleted
), lag AS (
    SELECT b.finished_at AS at,
           extract(epoch FROM b.finished_at
                   - (v.updated_at AT TIME ZONE current_setting('TimeZone')))::float8 AS s
    FROM v JOIN staging.sync_batches b ON b.batch_id = v._batch_id
    WHERE v.updated_at IS NOT NULL
)
SELECT {group} count(*), percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY s), max(s)
FROM lag {tail}
"""


def _lags(
    wh: psycopg.Connection[Any], first_batch: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Capture lag over the run, and minute by minute (does it hold, or grow?)."""
    params = {"b": first_batch}
    total = wh.execute(
        sql.SQL(LAG_SQL).format(group=sql.SQL(""), tail=sql.SQL("")), params
    ).fetchone()
    assert total is not None
    minutes = wh.execute(
        sql.SQL(LAG_SQL).format(
            group=sql.SQL("date_trunc('minute', at),"), tail=sql.SQL("GROUP BY 1 ORDER BY 1")
        ),
        params,
    ).fetchall()

    def row(count: int, ps: list[float] | None, top: float | None) -> dict[str, Any]:
        p50, p95, p99 = ps or (None, None, None)
        return {"count": count, "p50": p50, "p95": p95, "p99": p99, "max": top}

    return row(*total), [{"minute": str(m[0]), **row(*m[1:])} for m in minutes]


def _under_load(
    bench: Bench, slot: str, *, rate: int, duration: float, workers: int, writer: str
) -> tuple[Result, Result]:
    with psycopg.connect(bench.warehouse_url) as wh:
        row = wh.execute("SELECT coalesce(max(batch_id), 0) FROM staging.sync_batches").fetchone()
    assert row is not None
    first_batch = int(row[0]) + 1
    runner = probe.acme(bench, "run", "--cdc", "--slot", slot)
    load = probe.Load(bench, rate=rate, duration=duration, workers=workers, writer=writer)
    try:
        waited = probe.wait_ready(runner, probe.CDC_READY)
        log.info("run --cdc streaming after %.1f s", waited)
        with psycopg.connect(bench.source_url, autocommit=True) as src:
            load.start(src)
            probes = probe.probe(
                bench,
                base=PROBE_BASE,
                duration=duration - 2.0,
                every=PROBE_EVERY_S,
                poll=POLL_EVERY_S,
                start_after=2.0,
                children=[(runner, "run --cdc")],
                load=load,
            )
            reached = load.finish(src)
        with psycopg.connect(bench.warehouse_url) as wh:
            total, minutes = _lags(wh, first_batch)
            row = wh.execute(
                "SELECT count(*) FROM staging.sync_batches WHERE batch_id >= %s", (first_batch,)
            ).fetchone()
            batches = int(row[0]) if row else 0
    finally:
        load.stop()
        probe.stop(runner)
    log.info(
        "load: %.0f changes/s asked, %.0f reached overall, %s steady (%d %s writers)",
        rate,
        reached["reached_rate"],
        reached["steady_rate"],
        workers,
        writer,
    )
    lag = Result(
        "cdc.lag",
        "cdc: capture lag (source transaction start -> warehouse commit), run --cdc, "
        f"simulate --rate {rate}",
    )
    lag.seconds, lag.rows, lag.throughput = [], int(total["count"]), False
    lag.extra = {
        **total,
        **probe.load_spread(probes.loads),
        "load": reached,
        "cpu_s": probes.cpu,
        "cpu_ms_per_change": probes.cpu_ms_per_change,
        "batches": batches,
        "per_minute": minutes,
    }
    e2e = Result(
        "cdc.e2e",
        "cdc: source commit -> union view (run --cdc, refreshes beside the stream), "
        f"simulate --rate {rate}",
    )
    e2e.seconds, e2e.rows, e2e.throughput = probes.delays, len(probes.delays), False
    e2e.extra = {**probes.summary(), "load": reached}
    for r in (lag, e2e):
        s = r.extra
        r.note = (
            f"{r.rows} samples, p50 {s['p50'] * 1000:.0f} ms, p95 {s['p95'] * 1000:.0f} ms, "
            f"p99 {s['p99'] * 1000:.0f} ms; writes {reached['steady_rate'] or 0:.0f} changes/s"
            if r.rows
            else "no samples"
        )
    return lag, e2e


def measure(
    bench: Bench,
    *,
    rate: int = RATE,
    duration: float = DURATION_S,
    workers: int = 1,
    writer: str = "python",
    rates: bool = True,
) -> list[Result]:
    """All four figures (``rates=False``: only the two under load)."""
    with guarded(bench, NAME, "change capture") as found:
        migrate.upgrade(bench.warehouse_url)
        if rates:
            found.extend(_decode_rates(bench))
        slot = f"acme_bench_{uuid.uuid4().hex[:8]}"
        setup = cdc_api.setup(bench.settings, slot=slot, publication=f"{slot}_pub")
        initial = Result("cdc.setup", "cdc: setup (slot + initial copy in its snapshot)")
        initial.seconds, initial.rows = [setup.seconds], sum(setup.rows.values())
        found.append(initial)
        try:
            if rates:
                found.append(_apply_rate(bench, slot))
                found.append(_catch_up(bench, slot))
            from acme_mv.reports.refresh import refresh

            refresh(bench.settings, mode="historic")
            found.extend(
                _under_load(
                    bench, slot, rate=rate, duration=duration, workers=workers, writer=writer
                )
            )
        finally:
            cdc_api.drop(bench.settings, slot=slot)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = standalone.parser("python -m benchmarks.cdc", __doc__, orders=20_000)
    parser.add_argument(
        "--rate", type=int, default=RATE, help="row changes per second written by the simulator"
    )
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds under load")
    parser.add_argument(
        "--workers", type=int, default=1, help="simulator processes, each at rate / workers"
    )
    parser.add_argument(
        "--writer",
        choices=("python", "sql"),
        default="python",
        help="python: acme-mv sample simulate; sql: the same workload from a procedure on "
        "the source (benchmarks/sql_writer.py), for rates a Python writer cannot reach",
    )
    parser.add_argument(
        "--no-rates", action="store_true", help="skip the decode and apply rates (burst)"
    )
    args = parser.parse_args(argv)
    bench = standalone.bench(
        standalone.server(args),
        source_db="acme_bench_cdc_source",
        warehouses=["acme_bench_cdc_warehouse"],
        orders=args.orders,
    )
    load_before = os.getloadavg()
    results = measure(
        bench,
        rate=args.rate,
        duration=args.duration,
        workers=args.workers,
        writer=args.writer,
        rates=not args.no_rates,
    )
    out: dict[str, Any] = {}
    for r in results:
        out[r.name] = {
            "status": r.status,
            "note": r.note,
            "rows": r.rows,
            "seconds": r.median,
            **(r.extra or {}),
        }
        print(f"{r.name:20} {r.status:8} {r.note}")
    standalone.write(
        args.json,
        {
            "orders": args.orders,
            "rate": args.rate,
            "duration_s": args.duration,
            "workers": args.workers,
            "writer": args.writer,
            "load_before": load_before,
        },
        out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
