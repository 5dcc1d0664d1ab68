"""``acme-mv sample init``: the ``operations`` schema as the contract states it."""

from __future__ import annotations

from importlib import resources
from typing import LiteralString

from psycopg import sql

from acme_mv.db import Conn, one_value, schema_exists
from acme_mv.errors import SampleError

SCHEMA = "operations"
TABLES = ("customers", "products", "orders", "order_items")

#: a query psycopg runs: a constant string or a composed one
Statement = LiteralString | sql.SQL | sql.Composed


def schema_sql() -> str:
    return resources.files("acme_mv.sample").joinpath("schema.sql").read_text()


def init(conn: Conn, *, replace: bool = False) -> None:
    """Create the ``operations`` schema; with ``replace``, drop an existing one first.

    Runs in one transaction: either the whole schema exists afterwards or nothing changed.
    """
    with conn.transaction():
        if schema_exists(conn, SCHEMA):
            if not replace:
                raise SampleError(
                    "The schema operations already exists. Use --replace to drop and recreate it"
                )
            conn.execute("DROP SCHEMA operations CASCADE")
        conn.execute(schema_sql().encode())


def has_rows(conn: Conn, table: str) -> bool:
    """Whether ``operations.<table>`` holds at least one row (one index-free probe)."""
    return one_value(
        conn,
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(SCHEMA, table)),
        kind=bool,
    )
