"""``acme-mv sample load``: a realistic order history, generated on the server.

Every row is made by ``INSERT ... SELECT ... FROM generate_series`` with the
server's ``random()`` seeded by ``setseed``: nothing goes row by row through
Python, and the same seed gives the same rows (ids, names, statuses,
quantities; the timestamps are relative to the loading transaction's start).

What the history looks like (see docs/sample.md):

- ``orders`` orders over the past ``days`` days, ids rising with time; about
  ``orders / 20`` customers (at least 10) and ``orders / 200`` products (at
  least 20); 20..32 items per order (26 on average).
- Older orders are nearly all COMPLETED; the last day is a mix of PENDING,
  PROCESSING, REPROCESSING and COMPLETED; ``delivery_date = order_date + 10``.
- The orphans the contract promises, at small fixed shares: items on orders
  that do not exist (ids skipped in the order id sequence, as if deleted),
  orders without items, orders of customers and items of products that do not
  exist (ids just above the created ones; the sequences are moved past them so
  they never come to exist), NULL status, NULL delivery_date, NULL quanity.

All of it runs in the caller's one transaction: a failure leaves nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, LiteralString

from psycopg import sql

from acme_mv.db import Conn, one_value, relation_exists, schema_exists
from acme_mv.errors import SampleError
from acme_mv.sample import schema, words
from acme_mv.sample.schema import Statement

log = logging.getLogger(__name__)

LoadMode = Literal["refuse", "append", "replace", "if_empty"]
LOAD_MODES: tuple[LoadMode, ...] = ("refuse", "append", "replace", "if_empty")

#: ``progress(step, done, total)`` is called before each step of a load
ProgressCallback = Callable[[str, int, int], None]

#: the largest load accepted: 50 M orders are about 1.3 billion item rows,
#: far past the contract's scale; more is a typo
MAX_ORDERS = 50_000_000
#: a century of history is the most that makes sense for a date column
MAX_DAYS = 36_500

#: one skipped order id (an order that "was deleted", its items left behind)
#: per this many orders, at least one per load
ORDERS_PER_GHOST = 1_000
#: one customer / product id that does not exist per this many real ones, at least one
ROWS_PER_GHOST = 100
#: customers have been around for up to a year before the order history starts
CUSTOMER_HISTORY = timedelta(days=365)
#: ids of the (fictional) users in ``created_by`` / ``updated_by``
USERS = 50

SCHEMA = schema.SCHEMA
#: (table, serial key column) in load order
KEYS: tuple[tuple[str, str], ...] = (
    ("customers", "customer_id"),
    ("products", "product_id"),
    ("orders", "order_id"),
    ("order_items", "order_item_id"),
)

# Rows of every table: the subquery computes each random value once (OFFSET 0
# keeps the planner from inlining it and evaluating random() twice); the
# outer SELECT derives the columns from them. LOCALTIMESTAMP(3) is the
# transaction's start in the session's time zone, like the columns' default.

CUSTOMERS_SQL: LiteralString = """
INSERT INTO operations.customers
    (customer_id, customer_name, is_active, customer_address,
     updated_at, updated_by, created_at, created_by)
SELECT c.customer_id, c.customer_name, c.is_active,
       CASE WHEN c.r_address < 0.01 THEN NULL ELSE c.customer_address END,
       c.created_at + (LOCALTIMESTAMP(3) - c.created_at) * c.r_updated, c.user_id,
       c.created_at, c.user_id
FROM (
    SELECT %(base)s::bigint + g AS customer_id,
           (%(first)s::text[])[1 + floor(random() * %(n_first)s)::int]
               || ' ' || (%(last)s::text[])[1 + floor(random() * %(n_last)s)::int] AS customer_name,
           random() < 0.95 AS is_active,
           random() AS r_address,
           (1 + floor(random() * 400))::int || ' '
               || (%(streets)s::text[])[1 + floor(random() * %(n_streets)s)::int] || ', '
               || (1000 + floor(random() * 9000))::int || ' '
               || (%(cities)s::text[])[1 + floor(random() * %(n_cities)s)::int] AS customer_address,
           LOCALTIMESTAMP(3) - %(history)s::interval * random() AS created_at,
           random() AS r_updated,
           1 + floor(random() * %(users)s)::bigint AS user_id
    FROM generate_series(1, %(count)s::bigint) AS g
    OFFSET 0
) AS c
"""

PRODUCTS_SQL: LiteralString = """
INSERT INTO operations.products
    (product_id, product_name, barcode, unity_price, is_active,
     updated_at, updated_by, created_at, created_by)
SELECT p.product_id, p.product_name, p.barcode, p.unity_price,
       CASE WHEN p.r_active < 0.02 THEN NULL ELSE p.r_active >= 0.10 END,
       p.created_at + (LOCALTIMESTAMP(3) - p.created_at) * p.r_updated, p.user_id,
       p.created_at, p.user_id
FROM (
    SELECT %(base)s::bigint + g AS product_id,
           (%(adjectives)s::text[])[1 + floor(random() * %(n_adjectives)s)::int] || ' '
               || (%(nouns)s::text[])[1 + floor(random() * %(n_nouns)s)::int] || ' '
               || (1 + floor(random() * 999))::int AS product_name,
           lpad(floor(random() * 1e13)::bigint::text, 13, '0') AS barcode,
           round((0.5 + random() * 499.5)::numeric, 2) AS unity_price,
           random() AS r_active,
           LOCALTIMESTAMP(3) - %(history)s::interval * random() AS created_at,
           random() AS r_updated,
           1 + floor(random() * %(users)s)::bigint AS user_id
    FROM generate_series(1, %(count)s::bigint) AS g
    OFFSET 0
) AS p
"""

#: ``rel`` (1..slots) is an order's position in the id range of this load.
#: Its creation time is spread evenly over the history with a fixed jitter
#: (a hash of ``rel``, not ``random()``), so the items statement recomputes
#: it without reading the orders back.
ORDER_CREATED_AT: LiteralString = (
    "(LOCALTIMESTAMP(3) - %(history)s::interval"
    " + (rel - 1 + mod(rel * 7919, 997) / 997.0) * %(slot)s::interval)"
)
#: the positions left out of the orders: ``ghost_orders`` of them, evenly spread
IS_GHOST_ORDER: LiteralString = (
    "(mod(rel, %(stride)s) = 0 AND rel / %(stride)s <= %(ghost_orders)s)"
)

ORDERS_SQL = sql.SQL(
    """
INSERT INTO operations.orders
    (order_id, order_date, delivery_date, customer_id, status,
     updated_at, updated_by, created_at, created_by)
SELECT o.order_id,
       o.created_at::date,
       CASE WHEN mod(o.rel, 1000) = 250 THEN NULL ELSE o.created_at::date + 10 END,
       o.customer_id,
       o.status,
       CASE WHEN o.status IS NULL OR o.status = 'PENDING' THEN o.created_at
            ELSE o.created_at
                 + least(LOCALTIMESTAMP(3) - o.created_at, interval '3 days') * o.r_updated
       END,
       o.user_id, o.created_at, o.user_id
FROM (
    SELECT s.rel,
           %(base)s::bigint + s.rel AS order_id,
           s.created_at,
           CASE WHEN mod(s.rel, 997) = 1
                THEN %(ghost_customer)s::bigint + floor(random() * %(ghost_customers)s)::bigint
                ELSE %(customer_base)s::bigint + 1 + floor(random() * %(customers)s)::bigint
           END AS customer_id,
           CASE WHEN mod(s.rel, 1000) = 500 THEN NULL
                WHEN s.age < interval '1 day' THEN
                    CASE WHEN s.r < 0.40 THEN 'PENDING' WHEN s.r < 0.65 THEN 'PROCESSING'
                         WHEN s.r < 0.75 THEN 'REPROCESSING' ELSE 'COMPLETED' END
                WHEN s.age < interval '10 days' THEN
                    CASE WHEN s.r < 0.04 THEN 'PENDING' WHEN s.r < 0.12 THEN 'PROCESSING'
                         WHEN s.r < 0.16 THEN 'REPROCESSING' ELSE 'COMPLETED' END
                ELSE
                    CASE WHEN s.r < 0.002 THEN 'PENDING' WHEN s.r < 0.004 THEN 'PROCESSING'
                         WHEN s.r < 0.005 THEN 'REPROCESSING' ELSE 'COMPLETED' END
           END AS status,
           random() AS r_updated,
           1 + floor(random() * %(users)s)::bigint AS user_id
    FROM (
        SELECT rel, t.created_at, LOCALTIMESTAMP(3) - t.created_at AS age, random() AS r
        FROM (
            SELECT rel, {created_at} AS created_at
            FROM generate_series(1, %(slots)s::bigint) AS rel
            WHERE NOT {is_ghost}
        ) AS t
        OFFSET 0
    ) AS s
    OFFSET 0
) AS o
"""
).format(created_at=sql.SQL(ORDER_CREATED_AT), is_ghost=sql.SQL(IS_GHOST_ORDER))

#: items for every position, ghosts included (their items are the orphans);
#: one order in 500 gets none; each item one "transaction" 40 ms after the last.
#: Item ids are numbered here (a running sum of the items per order), not drawn
#: from the sequence row by row: nextval() per row cost a quarter of the time.
ORDER_ITEMS_SQL = sql.SQL(
    """
INSERT INTO operations.order_items
    (order_item_id, order_id, product_id, quanity, updated_at, updated_by, created_at, created_by)
SELECT %(item_base)s::bigint + s.items_before + i,
       %(base)s::bigint + s.rel,
       CASE WHEN (mod(s.rel, 211) = 3 AND i = 1) OR random() < 0.0005
            THEN %(ghost_product)s::bigint + floor(random() * %(ghost_products)s)::bigint
            ELSE %(product_base)s::bigint + 1 + floor(%(products)s * power(random(), 2))::bigint
       END,
       CASE WHEN (mod(s.rel, 997) = 5 AND i = 2) OR random() < 0.001 THEN NULL
            ELSE floor(random() * 1000)::int END,
       least(LOCALTIMESTAMP(3), s.created_at + i * interval '40 milliseconds'), s.user_id,
       least(LOCALTIMESTAMP(3), s.created_at + i * interval '40 milliseconds'), s.user_id
FROM (
    SELECT o.*, sum(o.n) OVER (ORDER BY o.rel ROWS UNBOUNDED PRECEDING) - o.n AS items_before
    FROM (
        SELECT rel,
               {created_at} AS created_at,
               CASE WHEN mod(rel, 500) = 7 AND NOT {is_ghost} THEN 0
                    ELSE 20 + floor(random() * 13)::int END AS n,
               1 + floor(random() * %(users)s)::bigint AS user_id
        FROM generate_series(1, %(slots)s::bigint) AS rel
        OFFSET 0
    ) AS o
) AS s
CROSS JOIN LATERAL generate_series(1, s.n) AS i
"""
).format(created_at=sql.SQL(ORDER_CREATED_AT), is_ghost=sql.SQL(IS_GHOST_ORDER))

INDEXES_SQL: LiteralString = """
SELECT c.relname, x.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i
JOIN pg_class x ON x.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = ANY(%s)
  AND NOT i.indisprimary
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
ORDER BY c.relname, x.relname
"""


@dataclass(frozen=True, kw_only=True)
class LoadResult:
    """Rows one load added, per table, and how long it took."""

    customers: int
    products: int
    orders: int
    order_items: int
    seconds: float
    #: True when the tables were empty (or replaced): indexes were dropped and rebuilt
    bulk: bool
    #: True when mode ``if_empty`` found rows and loaded nothing
    skipped: bool = False

    def summary(self) -> str:
        if self.skipped:
            return "nothing: the tables already hold rows (--if-empty)"
        return (
            f"{self.customers:,} customers, {self.products:,} products, {self.orders:,} orders, "
            f"{self.order_items:,} order items in {self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class _Plan:
    """How many rows of each kind one load makes, and where their ids start."""

    orders: int
    customers: int
    products: int
    ghost_orders: int
    ghost_customers: int
    ghost_products: int

    @classmethod
    def for_orders(cls, orders: int) -> _Plan:
        customers = max(10, orders // 20)
        products = max(20, orders // 200)
        return cls(
            orders=orders,
            customers=customers,
            products=products,
            ghost_orders=max(1, orders // ORDERS_PER_GHOST) if orders else 0,
            ghost_customers=max(1, customers // ROWS_PER_GHOST),
            ghost_products=max(1, products // ROWS_PER_GHOST),
        )

    @property
    def slots(self) -> int:
        """Order id positions used: the orders and the skipped ids between them."""
        return self.orders + self.ghost_orders


def validate(*, orders: int, days: int, mode: str) -> None:
    """Reject impossible arguments before touching the database."""
    if not isinstance(orders, int) or isinstance(orders, bool) or not 0 <= orders <= MAX_ORDERS:
        raise SampleError(f"--orders must be between 0 and {MAX_ORDERS:,}, not {orders!r}")
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DAYS:
        raise SampleError(f"--days must be between 1 and {MAX_DAYS:,}, not {days!r}")
    if mode not in LOAD_MODES:
        raise SampleError(f"Unknown load mode {mode!r}; use one of {', '.join(LOAD_MODES)}")


def seed_value(seed: int, stream: int) -> float:
    """The ``setseed`` argument (in [-1, 1]) for one statement of a seeded load."""
    return ((seed * 1_000_003 + stream * 7_919) % 2_000_001) / 1_000_000 - 1.0


def load(
    conn: Conn,
    *,
    orders: int,
    days: int = 120,
    seed: int = 0,
    mode: LoadMode = "refuse",
    progress: ProgressCallback | None = None,
) -> LoadResult:
    """Fill the ``operations`` schema with ``orders`` orders of history, in one transaction.

    ``mode``: ``refuse`` (default) raises :class:`SampleError` when the tables
    hold rows, ``append`` adds rows with new ids, ``replace`` empties the
    tables first, ``if_empty`` loads nothing when they hold rows (a one-shot
    init job that may run again: the load is one transaction, so an
    interrupted one left the tables empty and is simply redone). A missing
    schema is created.
    """
    validate(orders=orders, days=days, mode=mode)
    plan = _Plan.for_orders(orders)
    started = time.monotonic()
    with conn.transaction():
        conn.execute("SET LOCAL statement_timeout = 0")
        if not schema_exists(conn, SCHEMA):
            schema.init(conn)
        _require_tables(conn)
        _lock(conn)
        if mode == "replace":
            conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(_tables()))
            bulk = True
        else:
            bulk = _is_empty(conn)
            if not bulk and mode == "refuse":
                raise SampleError(_not_empty_message(conn))
            if not bulk and mode == "if_empty":
                return LoadResult(
                    customers=0, products=0, orders=0, order_items=0,
                    seconds=time.monotonic() - started, bulk=False, skipped=True,
                )  # fmt: skip
        steps = [
            "customers",
            "products",
            "orders",
            "order_items",
            *(["indexes"] if bulk else []),
            "analyze",
        ]

        def step(name: str) -> None:
            log.debug("load: %s", name)
            if progress is not None:
                progress(name, steps.index(name), len(steps))

        dropped = _drop_indexes(conn) if bulk else []
        bases = {table: _next_base(conn, table, key) for table, key in KEYS}
        counts = _insert_rows(conn, plan, bases=bases, days=days, seed=seed, step=step)
        _move_sequences(conn, plan, bases, items=counts["order_items"])
        if bulk:
            step("indexes")
            for ddl in dropped:
                # catalog-generated DDL (pg_get_indexdef), not user input
                conn.execute(ddl.encode())
        step("analyze")
        conn.execute(sql.SQL("ANALYZE {}").format(_tables()))
        if progress is not None:
            progress("done", len(steps), len(steps))
    return LoadResult(**counts, seconds=time.monotonic() - started, bulk=bulk, skipped=False)


def _insert_rows(
    conn: Conn,
    plan: _Plan,
    *,
    bases: dict[str, int],
    days: int,
    seed: int,
    step: Callable[[str], None],
) -> dict[str, int]:
    history = timedelta(days=days)
    common = {"users": USERS, "history": history}
    counts: dict[str, int] = {}

    def run(stream: int, table: str, query: Statement, params: dict[str, object]) -> None:
        step(table)
        conn.execute("SELECT setseed(%s)", (seed_value(seed, stream),))
        cur = conn.execute(query, {**common, **params})
        counts[table] = max(cur.rowcount, 0)

    run(1, "customers", CUSTOMERS_SQL, {
        "base": bases["customers"], "count": plan.customers,
        "first": list(words.FIRST_NAMES), "n_first": len(words.FIRST_NAMES),
        "last": list(words.LAST_NAMES), "n_last": len(words.LAST_NAMES),
        "streets": list(words.STREETS), "n_streets": len(words.STREETS),
        "cities": list(words.CITIES), "n_cities": len(words.CITIES),
        "history": history + CUSTOMER_HISTORY,
    })  # fmt: skip
    run(2, "products", PRODUCTS_SQL, {
        "base": bases["products"], "count": plan.products,
        "adjectives": list(words.ADJECTIVES), "n_adjectives": len(words.ADJECTIVES),
        "nouns": list(words.NOUNS), "n_nouns": len(words.NOUNS),
        "history": history + CUSTOMER_HISTORY,
    })  # fmt: skip
    if not plan.orders:
        step("orders")
        step("order_items")
        return {**counts, "orders": 0, "order_items": 0}
    positions = {
        "base": bases["orders"],
        "slots": plan.slots,
        "slot": history / plan.slots,
        "stride": plan.slots // plan.ghost_orders,
        "ghost_orders": plan.ghost_orders,
    }
    run(3, "orders", ORDERS_SQL, {
        **positions,
        "customer_base": bases["customers"], "customers": plan.customers,
        "ghost_customer": bases["customers"] + plan.customers + 1,
        "ghost_customers": plan.ghost_customers,
    })  # fmt: skip
    run(4, "order_items", ORDER_ITEMS_SQL, {
        **positions,
        "item_base": bases["order_items"],
        "product_base": bases["products"], "products": plan.products,
        "ghost_product": bases["products"] + plan.products + 1,
        "ghost_products": plan.ghost_products,
    })  # fmt: skip
    return counts


def _tables() -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(SCHEMA, table) for table in schema.TABLES)


def _require_tables(conn: Conn) -> None:
    for table in schema.TABLES:
        if not relation_exists(conn, SCHEMA, table):
            raise SampleError(
                f"The schema operations has no table {table}. Run "
                "`acme-mv sample init --replace` to recreate it"
            )


def _lock(conn: Conn) -> None:
    """Keep other writers (a running simulator) out until this load commits.

    Readers go on; a writer waits, then finds the sequences past the loaded ids.
    """
    conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(_tables()))


def _is_empty(conn: Conn) -> bool:
    return not any(schema.has_rows(conn, table) for table in schema.TABLES)


def _not_empty_message(conn: Conn) -> str:
    for table in ("orders", *schema.TABLES):
        count = _scalar(
            conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(SCHEMA, table))
        )
        if count:
            what = table.replace("_", " ")
            return f"operations already holds {count:,} {what}; use --append or --replace"
    raise AssertionError("not empty, yet no rows")  # pragma: no cover


def _drop_indexes(conn: Conn) -> list[str]:
    """Drop the secondary indexes (rebuilt after the load, faster than maintained); their DDL."""
    rows = conn.execute(INDEXES_SQL, (SCHEMA, list(schema.TABLES))).fetchall()
    for _, index, _ in rows:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(SCHEMA, str(index))))
    return [str(ddl) for _, _, ddl in rows]


def _next_base(conn: Conn, table: str, key: str) -> int:
    """The highest id used or handed out so far: new rows start after it."""
    return _scalar(
        conn,
        sql.SQL(
            "SELECT greatest((SELECT coalesce(max({key}), 0) FROM {table}),"
            " coalesce(pg_sequence_last_value(pg_get_serial_sequence(%s, %s)::regclass), 0))"
        ).format(key=sql.Identifier(key), table=sql.Identifier(SCHEMA, table)),
        (f"{SCHEMA}.{table}", key),
    )


def _scalar(conn: Conn, query: Statement, params: tuple[object, ...] = ()) -> int:
    return one_value(conn, query, params, kind=int)


def _move_sequences(conn: Conn, plan: _Plan, bases: dict[str, int], *, items: int) -> None:
    """Move the sequences past every id this load used or referenced (ghosts too)."""
    last = {
        "customers": bases["customers"] + plan.customers + plan.ghost_customers,
        "products": bases["products"] + plan.products + plan.ghost_products,
        "orders": bases["orders"] + plan.slots,
        "order_items": bases["order_items"] + items,
    }
    for table, key in KEYS:
        if last[table] > 0:
            conn.execute(
                "SELECT setval(pg_get_serial_sequence(%s, %s), %s)",
                (f"{SCHEMA}.{table}", key, last[table]),
            )
