"""``acme-mv sample simulate``: the source's live workload, as the contract states it.

Three jobs write, each row change in its own transaction (autocommit), with
``updated_at`` the transaction's ``CURRENT_TIMESTAMP(3)`` (set explicitly by
updates, the column default for inserts):

- customers: insert a new one, or update one's address and set ``is_active`` at random;
- products: insert a new one, or update one's ``unity_price`` and ``is_active``;
- orders: pick a random customer; with no order dated today that is not
  COMPLETED, insert one (``PENDING``, delivery in 10 days) and then its 20..32
  items, one transaction each, each attached to *the customer's first order
  dated today* (so items may land on an earlier, even COMPLETED, order);
  otherwise move that order to PROCESSING, COMPLETED or REPROCESSING. A
  COMPLETED order is never changed again.

The jobs are drawn in the contract's proportions (orders about 100 a minute,
products about 10 and customers a few every 2 minutes) and paced so that the
row changes of all of them together come at ``rate`` per second.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from typing import LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import args_row, scalar_row

from acme_mv import config
from acme_mv.config import scrub
from acme_mv.db import Conn, connect, first_line, one_value, relation_exists
from acme_mv.defaults import DEFAULT_RATE as DEFAULT_RATE
from acme_mv.errors import BadArgument, ConnectionLost, SampleError
from acme_mv.sample import schema, words
from acme_mv.sample.schema import Statement

log = logging.getLogger(__name__)

#: row changes per second accepted; beyond 10,000 a single connection cannot
#: keep up anyway and the number is most likely a typo
MAX_RATE = 10_000.0
#: job weights: runs per minute in the contract (customers "a few" per 2 min)
JOB_WEIGHTS = {"customers": 1.5, "products": 5.0, "orders": 100.0}
#: share of customer / product jobs that insert a new row (the rest update one)
INSERT_SHARE = 0.3
ITEMS_PER_ORDER = (20, 32)
OPEN_STATUSES_AFTER_PENDING = ("PROCESSING", "COMPLETED", "REPROCESSING")
#: rows created first in an empty schema, so that orders have someone to belong to
SEED_CUSTOMERS = 10
SEED_PRODUCTS = 20
#: the user id the scheduled jobs write as (``created_by`` / ``updated_by``)
JOB_USER = 0
#: when the database falls behind by more than this, the schedule restarts
#: from now instead of bursting to catch up
MAX_BACKLOG_S = 1.0
#: seconds between progress lines in the log
REPORT_EVERY_S = 60.0


def _random_row(table: str, key: str) -> sql.Composed:
    """A random existing row's key: the first at or above a random point (``%(r)s``
    in [0, 1)) between the smallest and the largest key; three index probes."""
    return sql.SQL(
        "(SELECT t.{key} FROM {table} t"
        " WHERE t.{key} >="
        " (SELECT min({key}) + floor(%(r)s * (max({key}) - min({key}) + 1))::bigint FROM {table})"
        " ORDER BY t.{key} LIMIT 1)"
    ).format(key=sql.Identifier(key), table=sql.Identifier(schema.SCHEMA, table))


RANDOM_CUSTOMER = _random_row("customers", "customer_id")
RANDOM_PRODUCT = _random_row("products", "product_id")
PICK_CUSTOMER = sql.SQL("SELECT {}, CURRENT_DATE").format(RANDOM_CUSTOMER)

#: every order dated today has an id >= this (orders are inserted with rising
#: ids; an order's date never changes): a cheap primary-key range instead of
#: a scan of all orders for each job (the contract's DDL has no other index)
TODAY_LOW: LiteralString = """
SELECT coalesce(min(order_id), (SELECT coalesce(max(order_id), 0) + 1 FROM operations.orders))
FROM operations.orders WHERE order_date = %(today)s
"""
OPEN_ORDER_TODAY: LiteralString = """
SELECT order_id FROM operations.orders
WHERE customer_id = %(customer)s AND order_date = CURRENT_DATE AND status <> 'COMPLETED'
  AND order_id >= %(low)s
ORDER BY order_id LIMIT 1
"""
INSERT_ORDER: LiteralString = """
INSERT INTO operations.orders
    (order_date, delivery_date, customer_id, status, created_by, updated_by)
VALUES (CURRENT_DATE, CURRENT_DATE + 10, %(customer)s, 'PENDING', %(user)s, %(user)s)
RETURNING order_id
"""
MOVE_ORDER: LiteralString = """
UPDATE operations.orders
SET status = %(status)s, updated_at = CURRENT_TIMESTAMP(3), updated_by = %(user)s
WHERE order_id = %(order)s AND status <> 'COMPLETED'
"""
#: the order a new order's items attach to: the customer's first order dated
#: today. Looked up once per new order, not per item: with no index on
#: ``customer_id`` (the contract's DDL) it scans today's orders, and the answer
#: cannot change between the items (order ids only grow, none is deleted)
FIRST_ORDER_TODAY: LiteralString = """
SELECT min(order_id) FROM operations.orders
WHERE customer_id = %(customer)s AND order_date = CURRENT_DATE AND order_id >= %(low)s
"""
INSERT_ITEM = sql.SQL(
    """
INSERT INTO operations.order_items (order_id, product_id, quanity, created_by, updated_by)
VALUES (%(order)s, {product}, %(quanity)s, %(user)s, %(user)s)
"""
).format(product=RANDOM_PRODUCT)
INSERT_CUSTOMER: LiteralString = """
INSERT INTO operations.customers
    (customer_name, is_active, customer_address, created_by, updated_by)
VALUES (%(name)s, TRUE, %(address)s, %(user)s, %(user)s)
RETURNING customer_id
"""
UPDATE_CUSTOMER = sql.SQL(
    """
UPDATE operations.customers
SET customer_address = %(address)s, is_active = %(active)s,
    updated_at = CURRENT_TIMESTAMP(3), updated_by = %(user)s
WHERE customer_id = {customer}
"""
).format(customer=RANDOM_CUSTOMER)
INSERT_PRODUCT: LiteralString = """
INSERT INTO operations.products
    (product_name, barcode, unity_price, is_active, created_by, updated_by)
VALUES (%(name)s, %(barcode)s, %(price)s::numeric, %(active)s, %(user)s, %(user)s)
"""
UPDATE_PRODUCT = sql.SQL(
    """
UPDATE operations.products
SET unity_price = %(price)s::numeric, is_active = %(active)s,
    updated_at = CURRENT_TIMESTAMP(3), updated_by = %(user)s
WHERE product_id = {product}
"""
).format(product=RANDOM_PRODUCT)


def _customer_today(customer: int | None, today: date) -> tuple[int | None, date]:
    """A row of PICK_CUSTOMER: None when the source has no customer left."""
    return customer, today


@dataclass(kw_only=True)
class SimulateStats:
    """Row changes one simulation made, per table and kind."""

    customers_inserted: int = 0
    customers_updated: int = 0
    products_inserted: int = 0
    products_updated: int = 0
    orders_inserted: int = 0
    orders_updated: int = 0
    order_items_inserted: int = 0
    seconds: float = 0.0
    #: stopped by Ctrl-C (or the stop event) rather than by the duration
    interrupted: bool = False

    @property
    def changes(self) -> int:
        return (
            self.customers_inserted + self.customers_updated + self.products_inserted
            + self.products_updated + self.orders_inserted + self.orders_updated
            + self.order_items_inserted
        )  # fmt: skip

    def summary(self) -> str:
        rate = self.changes / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.changes:,} row changes in {self.seconds:.1f} s ({rate:.1f}/s): "
            f"customers +{self.customers_inserted:,} ~{self.customers_updated:,}, "
            f"products +{self.products_inserted:,} ~{self.products_updated:,}, "
            f"orders +{self.orders_inserted:,} ~{self.orders_updated:,}, "
            f"order items +{self.order_items_inserted:,}"
        )


def validate_rate(rate: float) -> None:
    if not (isinstance(rate, int | float) and 0 < rate <= MAX_RATE):  # NaN fails too
        raise SampleError(
            f"--rate must be > 0 and <= {MAX_RATE:,.0f} row changes per second, not {rate!r}"
        )


def parse_duration(text: str | float | None) -> float | None:
    """How long to simulate: a duration (:func:`acme_mv.config.parse_duration`, the one
    parser: ``30s``, ``5m``, ``1m30s``, plain seconds) or a number of seconds; ``0``, empty
    or None mean no limit (None). Raises :class:`BadArgument` quoting the value."""
    if text is None:
        return None
    if isinstance(text, str):
        seconds = config.parse_duration(text) if text.strip() else 0.0
    else:
        seconds = float(text)
        if not math.isfinite(seconds) or seconds < 0:
            raise BadArgument(f"{text!r} is not a duration such as {config.DURATION_GRAMMAR}")
    return seconds or None


@dataclass
class _Pacer:
    """A schedule of one slot per row change, ``1 / rate`` seconds apart."""

    rate: float
    stop: threading.Event
    deadline: float | None
    next_at: float = field(default_factory=time.monotonic)

    def go(self) -> bool:
        """Wait for the next slot; False when it is time to stop instead."""
        now = time.monotonic()
        if self.next_at < now - MAX_BACKLOG_S:
            self.next_at = now
        if self.deadline is not None and max(now, self.next_at) >= self.deadline:
            self.stop.wait(max(0.0, self.deadline - now))
            return False
        if self.stop.wait(max(0.0, self.next_at - now)):
            return False
        self.next_at += 1.0 / self.rate
        return True


class _Stopped(Exception):
    """The pacer said stop (duration over or stop event set)."""


class _Workload:
    def __init__(self, conn: Conn, rng: random.Random, pacer: _Pacer) -> None:
        self.conn = conn
        self.rng = rng
        self.pacer = pacer
        self.stats = SimulateStats()
        self.today: date | None = None
        self.today_low = 0

    def change(
        self, query: Statement, params: dict[str, object]
    ) -> psycopg.Cursor[tuple[object, ...]]:
        """One row change: wait for its slot, then run it as its own transaction."""
        if not self.pacer.go():
            raise _Stopped
        return self.conn.execute(query, {"user": JOB_USER, **params})

    def run_job(self) -> None:
        job = self.rng.choices(list(JOB_WEIGHTS), weights=list(JOB_WEIGHTS.values()))[0]
        if job == "customers":
            self.customer_job()
        elif job == "products":
            self.product_job()
        else:
            self.order_job()

    def ensure_rows(self) -> None:
        """An empty schema gets a few customers and products first."""
        if not schema.has_rows(self.conn, "customers"):
            for _ in range(SEED_CUSTOMERS):
                self.insert_customer()
        if not schema.has_rows(self.conn, "products"):
            for _ in range(SEED_PRODUCTS):
                self.insert_product()

    def insert_customer(self) -> None:
        self.change(
            INSERT_CUSTOMER,
            {"name": words.customer_name(self.rng), "address": words.customer_address(self.rng)},
        )
        self.stats.customers_inserted += 1

    def insert_product(self) -> None:
        self.change(INSERT_PRODUCT, {
            "name": words.product_name(self.rng), "barcode": words.barcode(self.rng),
            "price": words.unity_price(self.rng), "active": self.rng.random() < 0.9,
        })  # fmt: skip
        self.stats.products_inserted += 1

    def customer_job(self) -> None:
        if self.rng.random() < INSERT_SHARE:
            self.insert_customer()
        else:
            self.stats.customers_updated += self.update_random_row(
                UPDATE_CUSTOMER, address=words.customer_address(self.rng)
            )

    def product_job(self) -> None:
        if self.rng.random() < INSERT_SHARE:
            self.insert_product()
        else:
            self.stats.products_updated += self.update_random_row(
                UPDATE_PRODUCT, price=words.unity_price(self.rng)
            )

    def update_random_row(self, query: Statement, **values: object) -> int:
        """Update a random row with ``values`` and a coin-flip ``is_active``; rows changed."""
        cur = self.change(
            query, {**values, "active": self.rng.random() < 0.5, "r": self.rng.random()}
        )
        return max(cur.rowcount, 0)

    def order_job(self) -> None:
        row = (
            self.conn.cursor(row_factory=args_row(_customer_today))
            .execute(PICK_CUSTOMER, {"r": self.rng.random()})
            .fetchone()
        )
        assert row is not None  # SELECT without FROM: one row
        customer, today = row
        if customer is None:  # every customer is gone (someone emptied the table)
            self.insert_customer()
            return
        if today != self.today:  # first job, or the day rolled over
            self.today = today
            self.today_low = one_value(self.conn, TODAY_LOW, {"today": today}, kind=int)
        found: int | None = (
            self.conn.cursor(row_factory=scalar_row)
            .execute(OPEN_ORDER_TODAY, {"customer": customer, "low": self.today_low})
            .fetchone()
        )
        if found is not None:
            status = self.rng.choice(OPEN_STATUSES_AFTER_PENDING)
            cur = self.change(MOVE_ORDER, {"order": found, "status": status})
            self.stats.orders_updated += max(cur.rowcount, 0)
            return
        self.change(INSERT_ORDER, {"customer": customer})
        self.stats.orders_inserted += 1
        first = self.conn.execute(
            FIRST_ORDER_TODAY, {"customer": customer, "low": self.today_low}
        ).fetchone()
        order = first[0] if first else None
        for _ in range(self.rng.randint(*ITEMS_PER_ORDER)):
            self.change(INSERT_ITEM, {
                "order": order, "r": self.rng.random(), "quanity": self.rng.randint(0, 999),
            })  # fmt: skip
            self.stats.order_items_inserted += 1


def simulate(
    url: str,
    *,
    rate: float,
    duration: float | None,
    seed: int | None,
    stop: threading.Event | None = None,
) -> SimulateStats:
    """Run the live workload against the source at ``url`` until ``duration``
    seconds pass (None or 0: no limit), ``stop`` is set, or Ctrl-C."""
    validate_rate(rate)
    limit = parse_duration(duration)
    stop = stop or threading.Event()
    started = time.monotonic()
    pacer = _Pacer(rate, stop, None if limit is None else started + limit)
    conn = connect(url, role="source", autocommit=True)
    work = _Workload(conn, random.Random(seed), pacer)
    try:
        for table in schema.TABLES:
            if not relation_exists(conn, schema.SCHEMA, table):
                raise SampleError(
                    f"The source has no table operations.{table}. Run `acme-mv sample init` first"
                )
        log.info(
            "simulating about %.1f row changes per second%s",
            rate,
            "" if limit is None else f" for {limit:g} s",
        )
        work.ensure_rows()
        reported = time.monotonic()
        while True:
            work.run_job()
            if time.monotonic() - reported >= REPORT_EVERY_S:
                reported = time.monotonic()
                log.info("so far: %s", _with_time(work.stats, started).summary())
    except _Stopped:
        work.stats.interrupted = stop.is_set()
    except KeyboardInterrupt:
        work.stats.interrupted = True
    except psycopg.OperationalError as exc:
        raise ConnectionLost(
            f"Lost the source after {work.stats.changes:,} row changes: "
            f"{scrub(first_line(exc), url)}",
            role="source",
        ) from None
    except psycopg.Error as exc:
        raise SampleError(
            f"The simulation failed after {work.stats.changes:,} row changes: "
            f"{scrub(first_line(exc), url)}"
        ) from None
    finally:
        conn.close()
    return _with_time(work.stats, started)


def _with_time(stats: SimulateStats, started: float) -> SimulateStats:
    stats.seconds = time.monotonic() - started
    return stats
