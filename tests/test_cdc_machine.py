"""A stateful property of change capture: any sequence of writes, deletes, odd values, a
transaction larger than a batch, a re-snapshot (drop + setup), a table re-copied (resync), a
second consumer of the slot and a killed warehouse session; after each step the stream catches
up and the reports equal the truth, verify is clean, staging equals the source."""

from __future__ import annotations

import threading

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from acme_mv import cdc
from acme_mv.errors import ConnectionFailed
from acme_mv.reports.verify import verify
from tests.support.cdc_helpers import KEYS, SET_SQL, TEST_HEARTBEAT_S, Cdc
from tests.support.database import DatabaseFactory
from tests.support.sync_helpers import execute, fill

BATCH_ROWS = 40
#: values a text column may hold that COPY's text format must escape, or that are long
ODD = [
    "tab\there",
    "new\nline",
    "back\\slash",
    "car\rriage",
    "\\N",
    "nul-free \u00e9\u4e2d",
    "",
    "x" * 5000,
]


def _machine(world: Cdc) -> type[RuleBasedStateMachine]:
    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0
            cdc.drop(world.settings, slot=world.slot)
            execute(
                world.src,
                "TRUNCATE operations.customers, operations.products, "
                "operations.orders, operations.order_items",
            )
            fill(world.src, customers=3, products=3, orders=10, order_items=20)
            world.setup()

        @rule(table=st.sampled_from(list(KEYS)), n=st.integers(1, 4))
        def insert(self, table: str, n: int) -> None:
            fill(world.src, **{table: n})

        @rule(table=st.sampled_from(list(KEYS)), residue=st.integers(0, 2), delete=st.booleans())
        def change(self, table: str, residue: int, delete: bool) -> None:
            self.n += 1
            what = (
                f"DELETE FROM operations.{table}"
                if delete
                else f"UPDATE operations.{table} SET {SET_SQL[table]}"
            )
            execute(
                world.src,
                f"{what} WHERE {KEYS[table]} %% 3 = %(r)s",
                {"n": self.n, "r": residue},
            )

        @rule(value=st.sampled_from(ODD))
        def odd_value(self, value: str) -> None:
            execute(
                world.src,
                "UPDATE operations.orders SET status = %s WHERE order_id = "
                "(SELECT min(order_id) FROM operations.orders)",
                (value,),
            )

        @rule()
        def big_transaction(self) -> None:
            execute(
                world.src,
                "UPDATE operations.order_items SET quanity = coalesce(quanity, 0) + 1; "
                "INSERT INTO operations.order_items (order_id, product_id, quanity) "
                "SELECT (SELECT min(order_id) FROM operations.orders), NULL, g "
                "FROM generate_series(1, 3 * 40) g; "
                "UPDATE operations.orders SET status = 'BIG'",
            )

        @rule()
        def re_snapshot(self) -> None:
            cdc.drop(world.settings, slot=world.slot)
            world.setup()

        @rule(table=st.sampled_from(list(KEYS)))
        def resync(self, table: str) -> None:
            cdc.resync(world.settings, table=table, slot=world.slot)

        @rule()
        def second_consumer(self) -> None:
            with world.streaming(batch_rows=BATCH_ROWS), world.streaming(batch_rows=BATCH_ROWS):
                fill(world.src, orders=2, order_items=3)

        @rule()
        def killed_warehouse_session(self) -> None:
            stop = threading.Event()
            errors: list[BaseException] = []

            def stream() -> None:
                try:
                    cdc.stream(
                        world.settings,
                        slot=world.slot,
                        heartbeat_s=TEST_HEARTBEAT_S,
                        batch_rows=BATCH_ROWS,
                        stop=stop,
                    )
                except BaseException as exc:
                    errors.append(exc)

            thread = threading.Thread(target=stream)
            thread.start()
            fill(world.src, order_items=5)
            execute(
                world.wh,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND application_name = 'acme-mv'",
            )
            stop.set()
            thread.join(60)
            assert all(isinstance(e, ConnectionFailed) for e in errors), errors

        @invariant()
        def caught_up_reports_true(self) -> None:
            world.catch_up(batch_rows=BATCH_ROWS)
            world.assert_staging_equals_source()
            world.assert_reports_true()
            verify(world.settings)  # raises VerifyFailed or ReportsBehind

    return Machine


def test_change_capture_survives_any_sequence(make_db: DatabaseFactory, slot_name: str) -> None:
    world = Cdc(src=make_db("source"), wh=make_db("warehouse"), slot=slot_name)
    run_state_machine_as_test(
        _machine(world),
        settings=settings(
            max_examples=6,
            stateful_step_count=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
