"""(6b) Refresh cost over a day, and the rollover: does a refresh cost what changed since the
last one?

Equal cycles (default 8), each: 1% of the orders move between open and closed, 0.5% new
open orders with 26 items each are inserted (untimed), then ``acme-mv sync`` and
``acme-mv refresh --current`` (timed). A refresh that grows with everything changed since the
rollover shows as a rising series; the issue's targets: last/first <= 1.2 and every cycle
<= 5% of a full rebuild (``refresh --rebuild``, timed before the cycles and after them).

Then the rollover after those cycles (about 12% of the orders changed): ``refresh --historic``
(a fold of the day's deltas into the historic part) against ``refresh --rebuild``; target
<= 10% of the rebuild.
"""

from __future__ import annotations

from functools import partial

from acme_mv import sync as sync_api
from acme_mv.db import Conn, connection
from acme_mv.reports import refresh as refresh_api
from benchmarks.acme_sync import migrated
from benchmarks.core import Bench, Result, guarded, timed

NAME = "refresh_growth"
CYCLES = 8
#: rounds of one small batch (SMALL_ORDERS orders change status) and its refresh
SMALL_ROUNDS = 20
SMALL_ORDERS = 5
#: share of the orders moved between open and closed per cycle
MOVE_FRACTION = 0.01
#: share of the orders inserted (open, 26 items each) per cycle
NEW_FRACTION = 0.005
ITEMS_PER_ORDER = 26


def change(bench: Bench, cycle: int) -> int:
    """One cycle's source writes; returns the rows written."""
    modulus = round(1 / MOVE_FRACTION)
    new = max(1, round(bench.orders * NEW_FRACTION))
    with bench.connect("source", autocommit=False) as conn, conn.transaction():
        moved = conn.execute(
            """
            UPDATE operations.orders
               SET status = CASE WHEN status = 'COMPLETED' THEN 'PROCESSING' ELSE 'COMPLETED' END,
                   updated_at = localtimestamp(3), updated_by = -1
             WHERE order_id %% %(m)s = %(slot)s
            """,
            {"m": modulus, "slot": (cycle * 37) % modulus},
        ).rowcount
        inserted = conn.execute(
            """
            WITH o AS (
                INSERT INTO operations.orders (order_date, delivery_date, customer_id, status)
                SELECT current_date, current_date + 10,
                       1 + g %% greatest((SELECT max(customer_id) FROM operations.customers), 1),
                       'PENDING'
                FROM generate_series(1, %(n)s) AS g
                RETURNING order_id
            )
            INSERT INTO operations.order_items (order_id, product_id, quanity)
            SELECT o.order_id,
                   1 + (o.order_id * 31 + g)
                   %% greatest((SELECT max(product_id) FROM operations.products), 1),
                   (o.order_id + g) %% 1000
            FROM o, generate_series(1, %(items)s) AS g
            """,
            {"n": new, "items": ITEMS_PER_ORDER},
        ).rowcount
    return moved + new + inserted


def measure(bench: Bench) -> list[Result]:
    with guarded(bench, NAME, "refresh --current over equal cycles") as found:
        migrated(bench)
        sync_api.sync(bench.settings)
        refresh_api.refresh(bench.settings, mode="historic")
        rebuild_before = timed(lambda: refresh_api.refresh(bench.settings, mode="rebuild"))

        growth = Result(
            "refresh_growth",
            f"refresh --current, {CYCLES} equal cycles (1% open<->closed, "
            "0.5% new orders x 26 items)",
            throughput=False,
        )
        syncs: list[float] = []
        rows: list[int] = []
        delta_rows: list[int] = []
        done: list[refresh_api.RefreshResult] = []
        for cycle in range(CYCLES):
            rows.append(change(bench, cycle))
            syncs.append(timed(lambda: sync_api.sync(bench.settings)))
            growth.seconds.append(
                timed(lambda: done.append(refresh_api.refresh(bench.settings, mode="current")))
            )
            delta_rows.append(done[-1].delta_rows)
        rebuild_after = timed(lambda: refresh_api.refresh(bench.settings, mode="rebuild"))
        # the rebuild emptied the current part: redo the day so that the rollover folds it
        for cycle in range(CYCLES):
            change(bench, CYCLES + cycle)
            sync_api.sync(bench.settings)
            refresh_api.refresh(bench.settings, mode="current")
        fold = Result(
            "rollover.fold", f"refresh --historic (fold) after {CYCLES} cycles", throughput=False
        )
        fold.seconds.append(timed(lambda: refresh_api.refresh(bench.settings, mode="historic")))
        rebuild = Result(
            "rollover.rebuild", "refresh --rebuild (from the latest-state tables)", throughput=False
        )
        rebuild.seconds.extend([rebuild_before, rebuild_after])

        first, last = growth.seconds[0], growth.seconds[-1]
        worst = max(s / rebuild_after for s in growth.seconds)
        growth.rows = round(sum(rows) / len(rows))
        growth.extra = {
            "refresh_s": growth.seconds,
            "sync_s": syncs,
            "rows_written_per_cycle": rows,
            "delta_rows_per_refresh": delta_rows,
            "last_over_first": last / first if first else None,
            "each_vs_rebuild": [s / rebuild_after for s in growth.seconds],
            "rebuild_s": [rebuild_before, rebuild_after],
        }
        growth.note = (
            "cycles (s): "
            + ", ".join(f"{s:.3f}" for s in growth.seconds)
            + f"; last/first {last / first:.2f}; worst cycle {worst:.1%} of a rebuild"
            + f"; delta rows read per refresh: {', '.join(map(str, delta_rows))}"
            + f"; syncs (s): {', '.join(f'{s:.2f}' for s in syncs)}"
        )
        found.extend([growth, fold, rebuild, *small_batches(bench)])
    return found


def small_batches(bench: Bench) -> list[Result]:
    """A refresh after one small batch, in-process: on one kept connection (as change
    capture's refresher does) and on a new connection each time (as ``acme-mv refresh``)."""
    kept = Result(
        "refresh_small.kept",
        f"refresh after a batch of {SMALL_ORDERS} changed orders, in-process, one kept connection",
        throughput=False,
        target="<= 10 ms",
    )
    new = Result(
        "refresh_small.new",
        f"refresh after a batch of {SMALL_ORDERS} changed orders, a new connection each",
        throughput=False,
    )
    with connection(bench.settings.database_url, role="warehouse", autocommit=True) as conn:
        for round_ in range(SMALL_ROUNDS):
            for result, on in ((kept, conn), (new, None)):
                _small_change(bench, round_)
                sync_api.sync(bench.settings, tables=["orders"])
                result.seconds.append(timed(partial(_refresh, bench, on)))
    kept.met = kept.median is not None and kept.median <= 0.010
    return [kept, new]


def _refresh(bench: Bench, conn: Conn | None) -> None:
    refresh_api.refresh(bench.settings, mode="current", conn=conn)


def _small_change(bench: Bench, round_: int) -> None:
    with bench.connect("source", autocommit=True) as conn:
        conn.execute(
            """
            UPDATE operations.orders
               SET status = CASE WHEN status = 'PENDING' THEN 'PROCESSING' ELSE 'PENDING' END,
                   updated_at = localtimestamp(3), updated_by = -2
             WHERE order_id IN (SELECT order_id FROM operations.orders
                                 ORDER BY order_id DESC OFFSET %s LIMIT %s)
            """,
            (round_ * SMALL_ORDERS, SMALL_ORDERS),
        )
