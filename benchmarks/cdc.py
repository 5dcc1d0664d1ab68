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
3. ``cdc.lag``: ``acme-mv sample simulate --rate R`` writes for D seconds while
   ``acme-mv cdc run`` streams and refreshes; capture lag per staged version =
   its batch's commit time in the warehouse (``sync_batches.finished_at``) minus
   the source row's ``updated_at`` (its transaction's start). p50/p95/p99.
4. ``cdc.e2e``: during the same run a probe order (PENDING, its own far-future
   delivery date) is committed on the source every second; its latency is the
   time to the first poll (every 20 ms) of ``analytics.open_orders`` that shows
   it. p50/p95/p99.

Standalone (its own databases on the embedded server)::

    python -m benchmarks.cdc --orders 20000 --rate 200 --duration 60
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import psycopg

from acme_mv import cdc as cdc_api
from acme_mv import migrate
from acme_mv.cdc import pgoutput
from benchmarks.core import Bench, Result, guarded

log = logging.getLogger(__name__)

NAME = "cdc"
RATE = 200
DURATION_S = 60.0
GRACE_S = 30.0
PROBE_EVERY_S = 1.0
POLL_EVERY_S = 0.02
PROBE_BASE = date(2200, 1, 1)
#: the burst for the decode and apply rates: transactions x rows each
BURST_TRANSACTIONS = 200
BURST_ROWS = 250


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))]


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    return {
        "p50": percentile(values, 0.5),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
        "max": max(values),
    }


def _burst(url: str) -> int:
    """Update BURST_ROWS order items in each of BURST_TRANSACTIONS transactions; returns the changes."""
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
                "UPDATE operations.order_items SET quanity = coalesce(quanity, 0) + 1, updated_at = CURRENT_TIMESTAMP(3) "
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
                f"CREATE PUBLICATION {publication} FOR TABLE operations.customers, operations.products, "  # noqa: S608
                "operations.orders, operations.order_items"
            )
        src.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        try:
            changes = _burst(bench.source_url)
            end = src.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            assert end is not None
            target = pgoutput.lsn_from_str(str(end[0]))
            # polling: the SQL interface decodes from the slot on every call (peek: nothing consumed)
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
    result.note = f"{sum(applied):,} changes in {len(applied)} batches, {sum(applied) / seconds:,.0f} changes/s"
    return result


def _acme(bench: Bench, *args: str) -> subprocess.Popen[bytes]:
    """``acme-mv ARGS`` in a child; its log goes to a temporary file (a pipe nobody reads
    fills up after 64 KiB of log lines and then blocks the child: ``cdc run`` logs every batch)."""
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
    proc.stderr = log_file  # read back with seek(0) when it failed
    return proc


def _log_tail(proc: subprocess.Popen[bytes]) -> str:
    if proc.stderr is None:
        return ""
    proc.stderr.seek(0)
    return proc.stderr.read().decode(errors="replace").strip()[-300:]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _under_load(bench: Bench, slot: str, *, rate: int, duration: float) -> tuple[Result, Result]:
    with psycopg.connect(bench.warehouse_url) as wh:
        row = wh.execute("SELECT coalesce(max(batch_id), 0) FROM staging.sync_batches").fetchone()
    assert row is not None
    first_batch = int(row[0]) + 1
    with psycopg.connect(bench.source_url, autocommit=True) as src:  # probes of an interrupted run
        src.execute("DELETE FROM operations.orders WHERE delivery_date >= %s", (PROBE_BASE,))
    committed: dict[date, float] = {}
    seen: dict[date, float] = {}
    runner = _acme(bench, "cdc", "run", "--slot", slot, "--batch-ms", "50")
    simulator = _acme(
        bench, "sample", "simulate", "--rate", str(rate), "--duration", f"{int(duration)}s"
    )
    try:
        with (
            psycopg.connect(bench.source_url, autocommit=True) as src,
            psycopg.connect(bench.warehouse_url, autocommit=True) as wh,
        ):
            started = time.monotonic()
            next_probe = started + 2.0  # let the streamer start
            while True:
                now = time.monotonic()
                if now - started < duration and now >= next_probe:
                    day = PROBE_BASE + timedelta(days=len(committed))
                    src.execute(
                        "INSERT INTO operations.orders (order_date, delivery_date, status) VALUES (current_date, %s, 'PENDING')",
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
                if now - started >= duration and (
                    len(seen) == len(committed) or now - started > duration + GRACE_S
                ):
                    break
                if runner.poll() is not None:
                    raise RuntimeError(
                        f"acme-mv cdc run exited {runner.returncode}: {bench.scrub(_log_tail(runner))}"
                    )
                time.sleep(POLL_EVERY_S)
            unseen = sorted(set(committed) - set(seen))
            if unseen:  # say what happened to them (a probe never seen is a finding, not noise)
                for day in unseen:
                    ids = [
                        r[0]
                        for r in src.execute(
                            "SELECT order_id FROM operations.orders WHERE delivery_date = %s",
                            (day,),
                        )
                    ]
                    staged = wh.execute(
                        "SELECT order_id, _batch_id, status, _deleted FROM staging.orders WHERE order_id = ANY(%s)",
                        (ids,),
                    ).fetchall()
                    log.warning(
                        "probe %s (orders %s) never seen in analytics.open_orders; staged: %s",
                        day,
                        ids,
                        staged,
                    )
            src.execute("DELETE FROM operations.orders WHERE delivery_date >= %s", (PROBE_BASE,))
            lags = [
                float(r[0])
                for r in wh.execute(
                    """
                    SELECT extract(epoch FROM b.finished_at - (v.updated_at AT TIME ZONE current_setting('TimeZone')))
                    FROM (SELECT _batch_id, updated_at FROM staging.orders WHERE _batch_id >= %(b)s AND NOT _deleted
                          UNION ALL
                          SELECT _batch_id, updated_at FROM staging.order_items WHERE _batch_id >= %(b)s AND NOT _deleted) v
                    JOIN staging.sync_batches b ON b.batch_id = v._batch_id
                    WHERE v.updated_at IS NOT NULL
                    """,
                    {"b": first_batch},
                ).fetchall()
            ]
    finally:
        _stop(simulator)
        _stop(runner)
    delays = [seen[d] - committed[d] for d in sorted(seen)]
    lag = Result(
        "cdc.lag",
        f"cdc: capture lag (source transaction start -> warehouse commit), simulate --rate {rate}",
    )
    lag.seconds, lag.rows, lag.throughput = lags, len(lags), False
    lag.extra = _spread(lags)
    e2e = Result(
        "cdc.e2e",
        f"cdc: source commit -> union view (cdc run, refreshes beside the stream), simulate --rate {rate}",
    )
    e2e.seconds, e2e.rows, e2e.throughput = delays, len(delays), False
    e2e.extra = {
        **_spread(delays),
        "probes": len(committed),
        "never_seen": len(committed) - len(seen),
    }
    for r in (lag, e2e):
        s = r.extra
        r.note = (
            f"{r.rows} samples, p50 {s['p50'] * 1000:.0f} ms, p95 {s['p95'] * 1000:.0f} ms, p99 {s['p99'] * 1000:.0f} ms"
            if r.rows
            else "no samples"
        )
    return lag, e2e


def measure(bench: Bench, *, rate: int = RATE, duration: float = DURATION_S) -> list[Result]:
    with guarded(bench, NAME, "change capture") as found:
        migrate.upgrade(bench.warehouse_url)
        found.extend(_decode_rates(bench))
        slot = f"acme_bench_{uuid.uuid4().hex[:8]}"
        setup = cdc_api.setup(bench.settings, slot=slot, publication=f"{slot}_pub")
        initial = Result("cdc.setup", "cdc: setup (slot + initial copy in its snapshot)")
        initial.seconds, initial.rows = [setup.seconds], sum(setup.rows.values())
        found.append(initial)
        try:
            found.append(_apply_rate(bench, slot))
            from acme_mv.reports.refresh import refresh

            refresh(bench.settings, mode="historic")
            found.extend(_under_load(bench, slot, rate=rate, duration=duration))
        finally:
            cdc_api.drop(bench.settings, slot=slot)
    return found


def main(argv: list[str] | None = None) -> int:
    from acme_mv import embedded
    from acme_mv.db import ensure_database
    from benchmarks import pg, report, source

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cdc",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument(
        "--rate", type=int, default=RATE, help="row changes per second written by the simulator"
    )
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds under load")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    server = embedded.start("bench")
    with psycopg.connect(server, autocommit=True) as conn:
        ensure_database(conn, "acme_bench_cdc_source")
        ensure_database(conn, "acme_bench_cdc_warehouse", recreate=True)
    bench = Bench(
        source_url=pg.with_db(server, "acme_bench_cdc_source"),
        warehouse_url=pg.with_db(server, "acme_bench_cdc_warehouse"),
        orders=args.orders,
        rounds=1,
        server_url=server,
    )
    source.prepare(bench, fresh=False)
    results = measure(bench, rate=args.rate, duration=args.duration)
    for r in results:
        print(f"{r.name:20} {r.status:8} {r.note}")
    if args.json:  # the shape of every result file (bench.results: filled by measure)
        report.write_json(
            bench,
            Path(args.json),
            benchmark="benchmarks.cdc",
            parameters={"rate": args.rate, "duration_s": args.duration},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
