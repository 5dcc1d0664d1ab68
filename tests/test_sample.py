"""The sample source's API: schema, bulk load, live workload (real PostgreSQL, small N)."""

from __future__ import annotations

import math
import threading
from typing import Any

import psycopg
import pytest

from acme_mv.config import parse_duration
from acme_mv.errors import BadArgument, ConnectionFailed, SampleError
from acme_mv.sample import load as load_api
from acme_mv.sample import schema, simulate
from tests.support.database import DatabaseFactory

# The contract's columns, in order: (table, column, data_type, max length,
# timestamp precision, nullable, default).
TS = ("timestamp without time zone", None, 3, "YES", "CURRENT_TIMESTAMP(3)")
AUDIT = [
    ("updated_at", *TS),
    ("updated_by", "bigint", None, None, "YES", None),
    ("created_at", *TS),
    ("created_by", "bigint", None, None, "YES", None),
]


def _serial(table: str, column: str) -> tuple[str, str, None, None, str, str]:
    return (
        column,
        "bigint",
        None,
        None,
        "NO",
        f"nextval('operations.{table}_{column}_seq'::regclass)",
    )


EXPECTED_COLUMNS = (
    [
        ("customers", *row)
        for row in [
            _serial("customers", "customer_id"),
            ("customer_name", "character varying", 500, None, "NO", None),
            ("is_active", "boolean", None, None, "NO", "true"),
            ("customer_address", "character varying", 500, None, "YES", None),
            *AUDIT,
        ]
    ]
    + [
        ("products", *row)
        for row in [
            _serial("products", "product_id"),
            ("product_name", "character varying", 500, None, "NO", None),
            ("barcode", "character varying", 26, None, "NO", None),
            ("unity_price", "numeric", None, None, "NO", None),
            ("is_active", "boolean", None, None, "YES", None),
            *AUDIT,
        ]
    ]
    + [
        ("orders", *row)
        for row in [
            _serial("orders", "order_id"),
            ("order_date", "date", None, 0, "YES", None),
            ("delivery_date", "date", None, 0, "YES", None),
            ("customer_id", "bigint", None, None, "YES", None),
            ("status", "character varying", None, None, "YES", None),
            *AUDIT,
        ]
    ]
    + [
        ("order_items", *row)
        for row in [
            _serial("order_items", "order_item_id"),
            ("order_id", "bigint", None, None, "YES", None),
            ("product_id", "bigint", None, None, "YES", None),
            ("quanity", "integer", None, None, "YES", None),
            *AUDIT,
        ]
    ]
)

TABLE_ORDER = {t: i for i, t in enumerate(schema.TABLES)}


def q(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def one(url: str, query: str, params: Any = None) -> Any:
    return q(url, query, params)[0][0]


def counts(url: str) -> dict[str, int]:
    return {t: one(url, f"SELECT count(*) FROM operations.{t}") for t in schema.TABLES}


def do_load(url: str, **kwargs: Any) -> load_api.LoadResult:
    with psycopg.connect(url) as conn:
        return load_api.load(conn, **kwargs)


def fingerprint(url: str) -> dict[str, str]:
    """A hash per table of every column that does not depend on when the load ran."""
    queries = {
        "customers": "SELECT customer_id, customer_name, is_active, customer_address, created_by "
        "FROM operations.customers",
        "products": "SELECT product_id, product_name, barcode, unity_price, "
        "is_active FROM operations.products",
        "orders": "SELECT order_id, customer_id, status, delivery_date - order_date, "
        "updated_by FROM operations.orders",
        "order_items": "SELECT order_item_id, order_id, product_id, quanity, created_by "
        "FROM operations.order_items",
    }
    return {
        t: one(url, f"SELECT md5(string_agg(x::text, ',' ORDER BY x::text)) FROM ({query}) AS x")
        for t, query in queries.items()
    }


# ---------------------------------------------------------------- schema


def test_init_creates_exactly_the_contract_schema(empty_url: str) -> None:
    with psycopg.connect(empty_url) as conn:
        schema.init(conn)
    rows = q(
        empty_url,
        "SELECT table_name, column_name, data_type, character_maximum_length, datetime_precision,"
        " is_nullable, column_default FROM information_schema.columns"
        " WHERE table_schema = 'operations' ORDER BY table_name, ordinal_position",
    )
    assert sorted(rows, key=lambda r: TABLE_ORDER[r[0]]) == EXPECTED_COLUMNS
    assert (
        one(
            empty_url,
            "SELECT count(*) FROM information_schema.table_constraints"
            " WHERE table_schema = 'operations' AND constraint_type = 'FOREIGN KEY'",
        )
        == 0
    )
    pks = q(
        empty_url,
        "SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc"
        " JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name)"
        " WHERE tc.table_schema = 'operations' AND tc.constraint_type = 'PRIMARY KEY' ORDER BY 1",
    )
    assert pks == sorted(load_api.KEYS)
    assert q(
        empty_url,
        "SELECT relname, relreplident FROM pg_class WHERE relnamespace = 'operations'::regnamespace"
        " AND relkind = 'r' ORDER BY 1",
    ) == [(t, "f") for t in sorted(schema.TABLES)]
    indexed = q(
        empty_url,
        "SELECT tablename FROM pg_indexes WHERE schemaname = 'operations'"
        " AND indexdef LIKE '%(updated_at)' ORDER BY 1",
    )
    assert indexed == [(t,) for t in sorted(schema.TABLES)]


def test_init_twice_refuses_without_replace(source_url: str) -> None:
    do_load(source_url, orders=50)
    with psycopg.connect(source_url) as conn, pytest.raises(SampleError, match="--replace"):
        schema.init(conn)
    assert counts(source_url)["orders"] == 50
    with psycopg.connect(source_url) as conn:
        schema.init(conn, replace=True)
    assert counts(source_url) == dict.fromkeys(schema.TABLES, 0)


# ---------------------------------------------------------------- load

ORDERS = 2000


@pytest.fixture
def loaded(source_url: str) -> tuple[str, load_api.LoadResult]:
    return source_url, do_load(source_url, orders=ORDERS, days=30, seed=11)


def test_load_makes_the_asked_rows(loaded: tuple[str, load_api.LoadResult]) -> None:
    url, result = loaded
    assert counts(url) == {
        "customers": ORDERS // 20,
        "products": 20,
        "orders": ORDERS,
        "order_items": result.order_items,
    }
    assert (result.customers, result.products, result.orders) == (ORDERS // 20, 20, ORDERS)
    assert result.bulk
    per_order = result.order_items / ORDERS
    assert 24.5 <= per_order <= 27.5
    assert q(url, "SELECT min(order_item_id), max(order_item_id) FROM operations.order_items") == [
        (1, result.order_items)
    ]
    assert (
        one(
            url,
            "SELECT max(n) FROM (SELECT count(*) n FROM "
            "operations.order_items GROUP BY order_id) x",
        )
        <= 32
    )
    # the updated_at indexes were rebuilt after the load
    assert (
        one(
            url,
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'operations' AND "
            "indexdef LIKE '%(updated_at)'",
        )
        == 4
    )


def test_load_has_every_status_and_plausible_dates(loaded: tuple[str, load_api.LoadResult]) -> None:
    url, _ = loaded
    statuses = dict(q(url, "SELECT status, count(*) FROM operations.orders GROUP BY 1"))
    assert {"PENDING", "PROCESSING", "REPROCESSING", "COMPLETED", None} == set(statuses)
    assert statuses["COMPLETED"] > ORDERS * 0.8
    assert statuses[None] == ORDERS // 1000
    old_open = one(
        url,
        "SELECT count(*) FROM operations.orders WHERE status <> 'COMPLETED' AND created_at < "
        "LOCALTIMESTAMP - interval '10 days'",
    )
    recent = one(
        url,
        "SELECT count(DISTINCT status) FROM operations.orders WHERE created_at >= "
        "LOCALTIMESTAMP - interval '10 days'",
    )
    assert old_open < ORDERS * 0.01
    assert recent == 4
    assert (
        one(url, "SELECT count(*) FROM operations.orders WHERE delivery_date <> order_date + 10")
        == 0
    )
    assert (
        one(url, "SELECT count(*) FROM operations.orders WHERE delivery_date IS NULL")
        == ORDERS // 1000
    )
    assert (
        one(url, "SELECT count(*) FROM operations.orders WHERE order_date <> created_at::date") == 0
    )
    assert one(url, "SELECT min(order_date) >= CURRENT_DATE - 31 FROM operations.orders")
    for table in schema.TABLES:
        bad = one(
            url,
            f"SELECT count(*) FROM operations.{table} WHERE updated_at < created_at OR updated_at "
            "> LOCALTIMESTAMP OR created_at IS NULL OR updated_at IS NULL",
        )
        assert bad == 0, table
    quanity = q(
        url,
        "SELECT min(quanity), max(quanity), count(*) - count(quanity) FROM operations.order_items",
    )[0]
    assert quanity[0] >= 0 and quanity[1] <= 999 and quanity[2] > 0


def test_load_has_the_contract_orphans(loaded: tuple[str, load_api.LoadResult]) -> None:
    url, _ = loaded
    items_without_order = one(
        url,
        "SELECT count(*) FROM operations.order_items i WHERE NOT EXISTS"
        " (SELECT 1 FROM operations.orders o WHERE o.order_id = i.order_id)",
    )
    orders_without_items = one(
        url,
        "SELECT count(*) FROM operations.orders o WHERE NOT EXISTS"
        " (SELECT 1 FROM operations.order_items i WHERE i.order_id = o.order_id)",
    )
    orders_without_customer = one(
        url,
        "SELECT count(*) FROM operations.orders o WHERE NOT EXISTS"
        " (SELECT 1 FROM operations.customers c WHERE c.customer_id = o.customer_id)",
    )
    items_without_product = one(
        url,
        "SELECT count(*) FROM operations.order_items i WHERE NOT EXISTS"
        " (SELECT 1 FROM operations.products p WHERE p.product_id = i.product_id)",
    )
    total_items = counts(url)["order_items"]
    assert 0 < items_without_order < total_items * 0.01
    assert 0 < orders_without_items < ORDERS * 0.01
    assert 0 < orders_without_customer < ORDERS * 0.01
    assert 0 < items_without_product < total_items * 0.01
    # the ids the orphans point at are never handed out later: the sequences are past them
    for table, key, referenced in [
        ("orders", "order_id", "SELECT max(order_id) FROM operations.order_items"),
        ("customers", "customer_id", "SELECT max(customer_id) FROM operations.orders"),
        ("products", "product_id", "SELECT max(product_id) FROM operations.order_items"),
        ("order_items", "order_item_id", "SELECT max(order_item_id) FROM operations.order_items"),
    ]:
        next_id = one(
            url, "SELECT nextval(pg_get_serial_sequence(%s, %s))", (f"operations.{table}", key)
        )
        assert next_id > one(url, referenced), table


def test_load_is_deterministic_for_a_seed(make_db: DatabaseFactory) -> None:
    a, b, c = make_db("source"), make_db("source"), make_db("source")
    do_load(a, orders=300, seed=5)
    do_load(b, orders=300, seed=5)
    do_load(c, orders=300, seed=6)
    assert fingerprint(a) == fingerprint(b)
    different = fingerprint(c)
    assert all(different[t] != fingerprint(a)[t] for t in schema.TABLES)


def test_load_refuses_appends_and_replaces(source_url: str) -> None:
    first = do_load(source_url, orders=200, seed=1)
    before = counts(source_url)
    with pytest.raises(
        SampleError, match=r"^operations already holds 200 orders; use --append or --replace$"
    ):
        do_load(source_url, orders=10)
    assert counts(source_url) == before

    second = do_load(source_url, orders=100, seed=2, mode="append")
    assert not second.bulk
    after = counts(source_url)
    assert after["orders"] == 300
    assert after["order_items"] == first.order_items + second.order_items
    assert after["customers"] == before["customers"] + second.customers
    # new ids: nothing overwritten, the first load's rows are still there
    assert one(source_url, "SELECT count(*) FROM operations.orders WHERE order_id <= 200") == 200
    assert one(
        source_url, "SELECT count(DISTINCT order_item_id) = count(*) FROM operations.order_items"
    )

    do_load(source_url, orders=50, seed=3, mode="replace")
    assert counts(source_url)["orders"] == 50
    assert one(source_url, "SELECT min(order_id) FROM operations.orders") == 1


def test_refuse_counts_any_table(source_url: str) -> None:
    with psycopg.connect(source_url) as conn:
        conn.execute("INSERT INTO operations.customers (customer_name) VALUES ('x')")
    with pytest.raises(SampleError, match="already holds 1 customers"):
        do_load(source_url, orders=10)


def test_load_creates_a_missing_schema(empty_url: str) -> None:
    result = do_load(empty_url, orders=100)
    assert counts(empty_url)["orders"] == 100 == result.orders


def test_load_of_zero_orders_makes_customers_and_products(source_url: str) -> None:
    result = do_load(source_url, orders=0)
    assert counts(source_url) == {"customers": 10, "products": 20, "orders": 0, "order_items": 0}
    assert (result.orders, result.order_items) == (0, 0)


def test_a_failing_load_leaves_nothing(empty_url: str, source_url: str) -> None:
    steps: list[str] = []

    def fail_at_items(step: str, done: int, total: int) -> None:
        steps.append(step)
        if step == "order_items":
            raise RuntimeError("boom")

    # on an existing schema: customers, products and orders were inserted, then rolled back
    with pytest.raises(RuntimeError, match="boom"):
        do_load(source_url, orders=300, progress=fail_at_items)
    assert steps == ["customers", "products", "orders", "order_items"]
    assert counts(source_url) == dict.fromkeys(schema.TABLES, 0)
    assert (
        one(
            source_url,
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'operations' AND "
            "indexdef LIKE '%(updated_at)'",
        )
        == 4
    )
    assert do_load(source_url, orders=10).orders == 10  # the sequences are not in the way

    # on a database without the schema: the schema it created is gone too
    with pytest.raises(RuntimeError, match="boom"):
        do_load(empty_url, orders=300, progress=fail_at_items)
    assert one(empty_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'operations'") == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"orders": -1}, "--orders must be between 0 and 50,000,000"),
        ({"orders": 50_000_001}, "--orders must be between 0 and 50,000,000"),
        ({"orders": 10, "days": 0}, "--days must be between 1"),
        ({"orders": 10, "mode": "merge"}, "Unknown load mode 'merge'"),
    ],
)
def test_load_rejects_bad_arguments(source_url: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SampleError, match=message):
        do_load(source_url, **kwargs)
    assert counts(source_url)["customers"] == 0


def test_load_reports_progress_per_table(source_url: str) -> None:
    seen: list[tuple[str, int, int]] = []
    do_load(source_url, orders=20, progress=lambda *a: seen.append(a))
    assert seen == [
        ("customers", 0, 6), ("products", 1, 6), ("orders", 2, 6), ("order_items", 3, 6),
        ("indexes", 4, 6), ("analyze", 5, 6), ("done", 6, 6),
    ]  # fmt: skip


# ---------------------------------------------------------------- simulate

LOG_UPDATES = """
CREATE TABLE public.order_updates (
    old_status varchar, new_status varchar, updated_at timestamp(3), tx_ts timestamp(3)
);
CREATE FUNCTION public.log_order_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.order_updates
        VALUES (OLD.status, NEW.status, NEW.updated_at, CURRENT_TIMESTAMP(3)::timestamp(3));
    RETURN NULL;
END $$;
CREATE TRIGGER log_order_update AFTER UPDATE ON operations.orders
    FOR EACH ROW EXECUTE FUNCTION public.log_order_update();
"""


@pytest.fixture
def busy_source(source_url: str) -> str:
    """A small history plus, for every customer, a COMPLETED and then an open order dated today."""
    do_load(source_url, orders=100, days=5, seed=3)
    with psycopg.connect(source_url) as conn:
        for status in ("COMPLETED", "PENDING"):
            conn.execute(
                "INSERT INTO operations.orders (order_date, delivery_date, customer_id, status)"
                " SELECT CURRENT_DATE, CURRENT_DATE + 10, customer_id, %s "
                "FROM operations.customers",
                (status,),
            )
        conn.execute(LOG_UPDATES)
    return source_url


def test_simulate_runs_the_contract_workload(busy_source: str) -> None:
    url = busy_source
    start = one(url, "SELECT LOCALTIMESTAMP(3)")
    max_item_before = one(url, "SELECT max(order_item_id) FROM operations.order_items")
    stats = simulate.simulate(url, rate=60, duration=2.5, seed=4)
    end = one(url, "SELECT LOCALTIMESTAMP(3)")
    assert not stats.interrupted
    assert 0 < stats.changes <= 60 * 2.5 + 1  # paced: never more than rate x duration
    assert stats.orders_updated > 0 and stats.orders_inserted > 0 and stats.order_items_inserted > 0

    # every change is stamped with its own transaction's time, within the run
    new_items = q(
        url,
        "SELECT count(*), count(DISTINCT xmin::text::bigint), min(updated_at), max(updated_at),"
        " count(*) FILTER (WHERE updated_at <> created_at) FROM "
        "operations.order_items WHERE order_item_id > %s",
        (max_item_before,),
    )[0]
    assert new_items[0] == new_items[1] == stats.order_items_inserted  # one transaction per item
    assert start <= new_items[2] and new_items[3] <= end and new_items[4] == 0
    for table in schema.TABLES:
        changed = one(
            url, f"SELECT count(*) FROM operations.{table} WHERE updated_at >= %s", (start,)
        )
        assert (
            one(url, f"SELECT count(*) FROM operations.{table} WHERE updated_at > %s", (end,)) == 0
        )
        if table == "order_items":
            assert changed == stats.order_items_inserted
    assert (
        one(url, "SELECT count(*) FROM operations.orders WHERE created_at >= %s", (start,))
        == stats.orders_inserted
    )

    updates = q(url, "SELECT old_status, new_status, updated_at, tx_ts FROM public.order_updates")
    assert len(updates) == stats.orders_updated
    assert all(old != "COMPLETED" for old, *_ in updates)  # a COMPLETED order never changes
    assert {new for _, new, *_ in updates} <= {"PROCESSING", "COMPLETED", "REPROCESSING"}
    assert all(
        updated_at == tx_ts and start <= updated_at <= end for _, _, updated_at, tx_ts in updates
    )

    new_orders = q(
        url,
        "SELECT order_date, delivery_date - order_date, status, created_by FROM operations.orders"
        " WHERE created_at >= %s AND status = 'PENDING'",
        (start,),
    )
    assert new_orders and all(days == 10 for _, days, _, _ in new_orders)
    # each new item sits on its customer's first order of that day (the contract's quirk)
    misplaced = one(
        url,
        "SELECT count(*) FROM operations.order_items i LEFT JOIN operations.orders o USING "
        "(order_id) WHERE i.order_item_id > %s AND (o.order_id IS NULL OR o.order_id <> (SELECT "
        "min(o2.order_id) FROM operations.orders o2 WHERE o2.customer_id = o.customer_id AND "
        "o2.order_date = o.order_date))",
        (max_item_before,),
    )
    assert misplaced == 0
    quanity = q(
        url,
        "SELECT min(quanity), max(quanity) FROM operations.order_items WHERE order_item_id > %s",
        (max_item_before,),
    )[0]
    assert quanity[0] >= 0 and quanity[1] <= 999


def test_simulate_fills_an_empty_schema(source_url: str) -> None:
    stats = simulate.simulate(source_url, rate=200, duration=1.0, seed=1)
    rows = counts(source_url)
    assert (
        rows["customers"] >= simulate.SEED_CUSTOMERS and rows["products"] >= simulate.SEED_PRODUCTS
    )
    assert rows["orders"] == stats.orders_inserted > 0
    assert rows["order_items"] == stats.order_items_inserted > 0


def test_simulate_stops_on_the_stop_event(source_url: str) -> None:
    stop = threading.Event()
    timer = threading.Timer(0.8, stop.set)
    timer.start()
    try:
        stats = simulate.simulate(source_url, rate=100, duration=None, seed=2, stop=stop)
    finally:
        timer.cancel()
    assert stats.interrupted
    assert 0.7 <= stats.seconds < 10
    assert stats.changes == sum(counts(source_url).values())


@pytest.mark.parametrize("rate", [0, -5, 10_001, math.nan, math.inf])
def test_simulate_rejects_bad_rates_before_connecting(rate: float) -> None:
    with pytest.raises(SampleError, match="--rate must be > 0 and <= 10,000"):
        simulate.simulate(
            "postgresql://nobody:secretpw@127.0.0.1:1/x", rate=rate, duration=1, seed=None
        )


def test_simulate_needs_the_schema(empty_url: str) -> None:
    with pytest.raises(SampleError, match="no table operations.customers.*sample init"):
        simulate.simulate(empty_url, rate=10, duration=1, seed=None)


def test_simulate_unreachable_server_is_one_clean_line() -> None:
    with pytest.raises(ConnectionFailed) as info:
        simulate.simulate(
            "postgresql://nobody:secretpw@127.0.0.1:1/x", rate=10, duration=1, seed=None
        )
    assert "secretpw" not in str(info.value)
    assert "source" in str(info.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("5m", 300.0), ("1m30s", 90.0), ("500ms", 0.5), ("90", 90.0), ("2.5", 2.5),
     (" 10 S ", 10.0), ("0", None), ("0s", None), ("", None), (None, None), (0, None), (1.5, 1.5)],
)  # fmt: skip
def test_parse_duration(text: str | float | None, seconds: float | None) -> None:
    """The simulator's limit: the one duration parser's value, 0 or nothing meaning no limit."""
    assert simulate.parse_duration(text) == seconds
    if isinstance(text, str) and text.strip():
        assert simulate.parse_duration(text) == (parse_duration(text) or None)


@pytest.mark.parametrize("text", ["5 minutes", "-3", "1 week", "m", "inf", -1, float("nan")])
def test_parse_duration_rejects(text: str | float) -> None:
    with pytest.raises(BadArgument) as info:
        simulate.parse_duration(text)
    assert repr(text) in str(info.value)
    assert info.value.exit_code == 2
