"""What a small batch costs the warehouse (change capture writes one every batch_ms, a few
hundred changes each): the statements it runs, and no catalog write once its session made
the scratch tables. Counted, never timed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from psycopg import sql

from acme_mv.cdc.write import Batch, Change, write
from acme_mv.db import Conn, TaggedCursor, connection
from acme_mv.staging import apply
from acme_mv.staging.batch import open_batch
from acme_mv.staging.tables import TABLES
from acme_mv.sync import sync
from tests.support.database import DatabaseFactory
from tests.support.sync_helpers import fill, scalar, settings

#: the statements of a small change-capture batch of orders and order items once its session
#: made the scratch tables (BEGIN and COMMIT aside): the lock, load tables left behind, the
#: batch id, its partitions, its row (open_batch); DateStyle, per table the scratch table (if
#: missing), its COPY and the versions appended (cdc.write); the state's emptiness, per version
#: table the scratch table (if missing) and the batch's changes, the 3 deltas, the state's 6
#: statements (apply); the batch finished
SMALL_BATCH_STATEMENTS = 5 + 1 + 2 * 3 + 1 + 2 * 2 + 3 + 6 + 1

#: the scratch tables of a batch of orders and order items (cdc.write's, apply's)
SCRATCH = ["_acme_cdc_orders", "_acme_cdc_order_items", apply.ORDER_CHANGES, apply.ITEM_CHANGES]


def _text(query: Any, cursor: TaggedCursor) -> str:
    shown = query.as_string(cursor) if isinstance(query, sql.Composable) else str(query)
    return " ".join(shown.split())


def _counting(seen: list[str]) -> type[TaggedCursor]:
    """A cursor class that records the text of every statement it runs (``seen``)."""

    class Counting(TaggedCursor):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Counting:
            seen.append(_text(query, self))
            super().execute(query, params, **kwargs)
            return self

        @contextmanager
        def copy(self, statement: Any, params: Any = None, *, writer: Any = None) -> Iterator[Any]:
            seen.append(_text(statement, self))
            with super().copy(statement, params, writer=writer) as cp:
                yield cp

    return Counting


def _changes(wh: Conn, statuses: dict[int, str], quanity: int) -> Batch:
    """A batch of change capture's: the orders ``statuses`` names with those statuses, and
    their items with ``quanity``, as the source would send them (each column's text; source
    and warehouse are one database here)."""
    batch = Batch()
    for table, key, where in (
        ("orders", "order_id", "order_id"),
        ("order_items", "order_item_id", "order_id"),
    ):
        spec = TABLES[table]
        cols = sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(c)) for c in spec.column_names
        )
        rows = wh.execute(
            sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s)").format(
                cols, sql.Identifier("operations", table), sql.Identifier(where)
            ),
            (list(statuses),),
        ).fetchall()
        changed = []
        for row in rows:
            values = dict(zip(spec.column_names, row, strict=True))
            if table == "orders":
                values["status"] = statuses[int(values["order_id"])]
            else:
                values["quanity"] = str(quanity)
            changed.append(
                Change(
                    table,
                    "upsert",
                    str(values[key]).encode(),
                    tuple(None if v is None else str(v).encode() for v in values.values()),
                )
            )
        batch.add_changes(changed)
    return batch


def _apply(wh: Conn, batch: Batch, seen: list[str] | None = None) -> None:
    cursors = wh.cursor_factory
    if seen is not None:
        wh.cursor_factory = _counting(seen)
    try:
        with wh.transaction(), open_batch(wh, tables=batch.table_names):
            write(wh, batch, encoding="UTF8")
    finally:
        wh.cursor_factory = cursors


def _scratch_tables(wh: Conn) -> dict[str, int]:
    rows = wh.execute(
        "SELECT relname::text, oid::bigint FROM pg_class "
        "WHERE relnamespace = pg_my_temp_schema() AND relname = ANY(%s)",
        (SCRATCH,),
    ).fetchall()
    return {str(name): int(oid) for name, oid in rows}


def _scalar(wh: Conn, query: sql.Composed) -> Any:
    row = wh.execute(query).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def staged(make_db: DatabaseFactory) -> str:
    """One database, source and warehouse, with 40 orders synced (the state not empty)."""
    url = make_db("both")
    fill(url, customers=5, products=5, orders=40, order_items=120)
    sync(settings(url, url))
    return url


def test_a_small_batch_runs_few_statements_and_writes_no_catalog(staged: str) -> None:
    with connection(staged, role="warehouse", autocommit=True) as wh:
        _apply(wh, _changes(wh, {1: "COMPLETED", 2: "PENDING", 3: "SHIPPED"}, 7))
        made = _scratch_tables(wh)
        assert sorted(made) == sorted(SCRATCH)  # kept by the session, empty
        for name in SCRATCH:
            assert _scalar(wh, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))) == 0
        seen: list[str] = []
        _apply(wh, _changes(wh, {1: "PENDING", 4: "COMPLETED"}, 9), seen)
        # the same tables (no CREATE, no DROP: the catalogs untouched), and no statistics
        assert _scratch_tables(wh) == made
        ddl = [s for s in seen if s.split()[0].upper() in ("CREATE", "DROP", "ANALYZE", "ALTER")]
        assert all(s.startswith("CREATE TEMP TABLE IF NOT EXISTS") for s in ddl), ddl
        assert len(seen) == SMALL_BATCH_STATEMENTS, "\n".join(seen)
    # and the batch did its work
    assert (
        scalar(staged, "SELECT status FROM staging.orders_state WHERE order_id = 4") == "COMPLETED"
    )
    assert (
        scalar(
            staged,
            "SELECT count(*) FROM staging.order_items_state "
            "WHERE order_id IN (1, 4) AND quanity <> 9",
        )
        == 0
    )


def test_a_large_batch_analyzes_its_changes(staged: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """From ANALYZE_MIN_ROWS changes the planner gets their statistics (and plans anew)."""
    monkeypatch.setattr(apply, "ANALYZE_MIN_ROWS", 3)
    with connection(staged, role="warehouse", autocommit=True) as wh:
        seen: list[str] = []
        _apply(wh, _changes(wh, {1: "COMPLETED", 2: "COMPLETED"}, 5), seen)
        assert [s for s in seen if s.startswith("ANALYZE")] == [
            f'ANALYZE "{apply.ITEM_CHANGES}"'
        ]  # 2 orders, 6 items


def test_the_first_small_batch_after_a_large_one_plans_anew(
    staged: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statistics (and the plans cached with them) of a large batch do not outlive it: the
    next small batch ANALYZEs its changes once, the one after it does not."""
    analyzed = f'ANALYZE "{apply.ITEM_CHANGES}"'
    with connection(staged, role="warehouse", autocommit=True) as wh:
        for threshold, statuses, expected in (
            (3, {1: "COMPLETED", 2: "COMPLETED"}, [analyzed]),  # 6 items: large
            (10**6, {1: "PENDING"}, [analyzed]),  # the first small one after it
            (10**6, {1: "SHIPPED"}, []),
            (10**6, {1: "COMPLETED"}, []),
        ):
            monkeypatch.setattr(apply, "ANALYZE_MIN_ROWS", threshold)
            seen: list[str] = []
            _apply(wh, _changes(wh, statuses, 5), seen)
            assert [s for s in seen if s.startswith("ANALYZE")] == expected, statuses


def test_a_batch_after_one_rolled_back_makes_the_scratch_tables_again(staged: str) -> None:
    """The transaction that created the session's scratch tables rolled back: they went with
    it, and the next batch makes them again."""
    with connection(staged, role="warehouse", autocommit=True) as wh:
        failing = _changes(wh, {5: "COMPLETED"}, 3)
        with (
            pytest.raises(ZeroDivisionError),
            wh.transaction(),
            open_batch(wh, tables=["orders", "order_items"]),
        ):
            write(wh, failing, encoding="UTF8")
            1 / 0  # noqa: B018 - the writer fails after landing its rows
        assert _scratch_tables(wh) == {}
        _apply(wh, _changes(wh, {5: "PENDING"}, 4))
        assert sorted(_scratch_tables(wh)) == sorted(SCRATCH)
    assert scalar(staged, "SELECT status FROM staging.orders_state WHERE order_id = 5") == "PENDING"
