"""Property: whatever the interleaving of inserts, updates, deletes, open transactions, streaming
and refreshes, after every catch-up the reports equal the truth computed on the source and
staging's live latest versions equal the source rows."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from acme_mv.reports.refresh import refresh
from tests.support.cdc_helpers import KEYS, SET_SQL, Cdc
from tests.support.database import DatabaseFactory
from tests.support.sync_helpers import execute, fill

Step = tuple[Any, ...]
#: keys at and above this are written only by held-open transactions (never row-locked by another
#: step)
RESERVED = 100_000
steps = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.sampled_from(list(KEYS)), st.integers(1, 5)),
        st.tuples(st.just("update"), st.sampled_from(list(KEYS)), st.integers(0, 4)),
        st.tuples(st.just("delete"), st.sampled_from(list(KEYS)), st.integers(0, 4)),
        st.tuples(
            st.just("open"),
        ),
        st.tuples(
            st.just("commit"),
        ),
        st.tuples(
            st.just("stream"),
        ),
        st.tuples(
            st.just("refresh"),
        ),
    ),
    min_size=1,
    max_size=12,
)


class World:
    def __init__(self, cdc: Cdc) -> None:
        self.cdc = cdc
        self.open: psycopg.Connection[Any] | None = None
        self.counter = 0

    def reset(self) -> None:
        execute(
            self.cdc.src,
            "TRUNCATE operations.customers, operations.products, "
            "operations.orders, operations.order_items",
        )
        fill(self.cdc.src, customers=3, products=3, orders=12, order_items=30)
        execute(
            self.cdc.src,
            "INSERT INTO operations.order_items (order_item_id, order_id, product_id, quanity) "
            "SELECT g, 1, 1, 7 FROM generate_series(%s::bigint, %s::bigint + 20) g",
            (RESERVED, RESERVED),
        )
        self.check()

    def check(self) -> None:
        self.cdc.catch_up()
        self.cdc.assert_staging_equals_source()
        self.cdc.assert_reports_true()

    def run(self, step: Step) -> None:
        self.counter += 1
        kind = step[0]
        if kind == "insert":
            fill(self.cdc.src, **{step[1]: step[2]})
        elif kind in ("update", "delete"):
            table, residue = step[1], step[2]
            change = (
                f"UPDATE operations.{table} SET {SET_SQL[table]}"
                if kind == "update"
                else f"DELETE FROM operations.{table}"
            )
            execute(
                self.cdc.src,
                f"{change} WHERE {KEYS[table]} %% 5 = %(r)s AND {KEYS[table]} < %(reserved)s",
                {"n": self.counter, "r": residue, "reserved": RESERVED},
            )
        elif kind == "open":
            if self.open is None:
                self.open = psycopg.connect(self.cdc.src)
            # only rows no other step touches (keys >= RESERVED): a held row lock never blocks a
            # later step
            self.open.execute(
                "INSERT INTO operations.orders (order_id, status, delivery_date) VALUES "
                "(%s, 'PENDING', '2026-12-01')",
                (RESERVED + 1000 + self.counter,),
            )
            self.open.execute(
                "DELETE FROM operations.order_items WHERE order_item_id = "
                "(SELECT min(order_item_id) FROM operations.order_items WHERE order_item_id >= %s)",
                (RESERVED,),
            )
        elif kind == "commit":
            if self.open is not None:
                self.open.commit()
                self.open.close()
                self.open = None
        elif kind == "stream":
            self.check()
        else:
            refresh(self.cdc.settings, mode="current")

    def close(self) -> None:
        if self.open is not None:
            self.open.close()
            self.open = None


@pytest.fixture
def world(make_db: DatabaseFactory, slot_name: str) -> World:
    cdc = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    cdc.setup()
    return World(cdc)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=steps)
@example(
    plan=[("delete", "orders", 1), ("stream",), ("insert", "orders", 2), ("refresh",), ("stream",)]
)
@example(plan=[("open",), ("update", "order_items", 2), ("stream",), ("commit",), ("stream",)])
def test_reports_equal_the_truth_after_every_catch_up(world: World, plan: list[Step]) -> None:
    world.reset()
    try:
        for step in plan:
            world.run(step)
        world.run(("commit",))
        world.check()
    finally:
        world.close()
