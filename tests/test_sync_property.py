"""Property: whatever the interleaving of writes, open transactions and syncs,
once every transaction has committed one more sync makes staging's latest
versions equal the source.

The safety margin is shrunk to the 1 ms that millisecond rounding needs, so that
the cursor really lands between writes and late commits are caught by the
pg_stat_activity watermark, not by the margin.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from acme_mv.sync import source, sync
from tests.support.database import DatabaseFactory
from tests.support.sync_helpers import assert_converged, execute, fill
from tests.support.sync_helpers import settings as sync_settings

#: explicit keys for rows inserted inside held-open transactions (never from a sequence)
LATE_KEY_BASE = 100_000
#: main-connection updates touch keys with key % 10 in 0..8; slot s updates key % 20 == 9 + 10 s,
#: so a held-open transaction never blocks a later step on a row lock
SLOTS = 2

Step = tuple[Any, ...]

steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("insert"),
            st.sampled_from(["orders", "order_items", "customers", "products"]),
            st.integers(1, 4),
        ),
        st.tuples(
            st.just("update"),
            st.sampled_from(["orders", "order_items"]),
            st.integers(0, 8),
            st.sampled_from(["now", "tie", "null"]),
        ),
        st.tuples(st.just("open"), st.integers(0, SLOTS - 1)),
        st.tuples(st.just("commit"), st.integers(0, SLOTS - 1)),
        st.tuples(st.just("sync"), st.sampled_from(["all", "orders", "full"])),
    ),
    min_size=1,
    max_size=14,
)

_KEYS = {"orders": "order_id", "order_items": "order_item_id"}
_SET = {"orders": "status = 'S' || %(n)s", "order_items": "quanity = %(n)s"}


class World:
    def __init__(self, src: str, wh: str) -> None:
        self.src, self.wh = src, wh
        self.open: dict[int, psycopg.Connection[Any]] = {}
        self.counter = 0

    def reset(self) -> None:
        execute(
            self.src,
            "TRUNCATE operations.customers, operations.products, operations.orders, "
            "operations.order_items RESTART IDENTITY",
        )
        execute(
            self.wh,
            "TRUNCATE staging.customers, staging.products, staging.orders, staging.order_items, "
            "staging.sync_state, staging.sync_batches",
        )
        fill(self.src, customers=3, products=3, orders=30, order_items=60)

    def close(self) -> None:
        for conn in self.open.values():
            conn.close()
        self.open.clear()

    def tie(self, table: str) -> dt.datetime | None:
        with psycopg.connect(self.wh) as conn:
            row = conn.execute(
                "SELECT cursor_value FROM staging.sync_state WHERE table_name = %s", (table,)
            ).fetchone()
        return row[0] if row else None

    def run(self, step: Step) -> None:
        self.counter += 1
        n = self.counter
        kind = step[0]
        if kind == "insert":
            fill(self.src, **{step[1]: step[2]})
        elif kind == "update":
            _, table, residue, stamp = step
            stamp_sql = {"now": "CURRENT_TIMESTAMP(3)", "null": "NULL", "tie": "%(tie)s"}[stamp]
            tie = self.tie(table) if stamp == "tie" else None
            if stamp == "tie" and tie is None:
                stamp_sql = "CURRENT_TIMESTAMP(3)"
            key = _KEYS[table]
            execute(
                self.src,
                f"UPDATE operations.{table} SET {_SET[table]}, updated_at = {stamp_sql} "
                f"WHERE {key} %% 10 = %(r)s AND {key} < %(late)s",
                {"n": n, "r": residue, "tie": tie, "late": LATE_KEY_BASE},
            )
        elif kind == "open":
            slot = step[1]
            conn = self.open.get(slot) or psycopg.connect(self.src)
            self.open[slot] = conn
            conn.execute(
                "UPDATE operations.orders SET status = 'L' || %s, updated_at = "
                "CURRENT_TIMESTAMP(3) WHERE order_id %% 20 = %s AND order_id < %s",
                (n, 9 + 10 * slot, LATE_KEY_BASE),
            )
            conn.execute(
                "INSERT INTO operations.orders (order_id, status) VALUES (%s, 'late')",
                (LATE_KEY_BASE + n,),
            )
            conn.execute(
                "INSERT INTO operations.order_items (order_item_id, order_id, "
                "quanity) VALUES (%s, %s, %s)",
                (LATE_KEY_BASE + n, LATE_KEY_BASE + n, n),
            )
            conn.execute(
                "INSERT INTO operations.customers (customer_id, customer_name) VALUES (%s, 'late')",
                (LATE_KEY_BASE + n,),
            )
        elif kind == "commit":
            held = self.open.pop(step[1], None)
            if held is not None:
                held.commit()
                held.close()
        else:
            mode = step[1]
            sync(
                sync_settings(self.src, self.wh),
                tables=["orders"] if mode == "orders" else None,
                full=mode == "full",
            )

    def finish(self) -> None:
        for slot in list(self.open):
            self.run(("commit", slot))
        self.run(("sync", "all"))


@pytest.fixture
def world(make_db: DatabaseFactory, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setattr(source, "SAFETY_MARGIN", dt.timedelta(milliseconds=1))
    return World(make_db("source"), make_db("warehouse"))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=steps)
@example(plan=[("sync", "all"), ("update", "orders", 1, "tie"), ("sync", "orders")])
@example(
    plan=[
        ("sync", "all"),
        ("open", 0),
        ("sync", "all"),
        ("update", "order_items", 2, "null"),
        ("sync", "all"),
    ]
)
def test_one_more_sync_converges(world: World, plan: list[Step]) -> None:
    world.reset()
    try:
        for step in plan:
            world.run(step)
        world.finish()
    finally:
        world.close()
    assert_converged(world.src, world.wh)
