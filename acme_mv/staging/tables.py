"""The source's tables as the contract states them, and the check that the source still does.

The contract (``operations.*``) is written down here as data: every column
with its exact type, because the COPY is binary and binary COPY only works
between identical types. :func:`check_schema` compares the source with it
before anything is copied, by the cursor sync and by change capture alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from psycopg import sql
from psycopg.rows import scalar_row

from acme_mv.db import Conn
from acme_mv.errors import SchemaDrift

log = logging.getLogger(__name__)

TableName = Literal["customers", "products", "orders", "order_items"]
#: ``append``: every version kept, incremental by cursor; ``mirror``: reloaded whole
Kind = Literal["append", "mirror"]

SCHEMA = "operations"

#: what ``format_type`` prints for the contract's types
_TS = "timestamp(3) without time zone"
_AUDIT = (
    ("updated_at", _TS),
    ("updated_by", "bigint"),
    ("created_at", _TS),
    ("created_by", "bigint"),
)


@dataclass(frozen=True)
class TableSpec:
    name: TableName
    key: str
    kind: Kind
    columns: tuple[tuple[str, str], ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)

    @property
    def qualified(self) -> str:
        return f"{SCHEMA}.{self.name}"


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "customers",
            "customer_id",
            "mirror",
            (
                ("customer_id", "bigint"),
                ("customer_name", "character varying(500)"),
                ("is_active", "boolean"),
                ("customer_address", "character varying(500)"),
                *_AUDIT,
            ),
        ),
        TableSpec(
            "products",
            "product_id",
            "mirror",
            (
                ("product_id", "bigint"),
                ("product_name", "character varying(500)"),
                ("barcode", "character varying(26)"),
                ("unity_price", "numeric"),
                ("is_active", "boolean"),
                *_AUDIT,
            ),
        ),
        TableSpec(
            "orders",
            "order_id",
            "append",
            (
                ("order_id", "bigint"),
                ("order_date", "date"),
                ("delivery_date", "date"),
                ("customer_id", "bigint"),
                ("status", "character varying"),
                *_AUDIT,
            ),
        ),
        TableSpec(
            "order_items",
            "order_item_id",
            "append",
            (
                ("order_item_id", "bigint"),
                ("order_id", "bigint"),
                ("product_id", "bigint"),
                ("quanity", "integer"),
                *_AUDIT,
            ),
        ),
    )
}

_COLUMNS_SQL = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')
"""

UPDATED_AT_INDEXED_SQL = """
SELECT c.relname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
WHERE n.nspname = %s AND c.relname = ANY(%s) AND a.attname = 'updated_at' AND i.indisvalid
"""


def no_table(spec: TableSpec) -> SchemaDrift:
    return SchemaDrift(
        f"The source has no table {spec.qualified}: point --source-url (ACME_MV_SOURCE_URL) "
        "at the transactional database with the contract's tables, or create them there "
        "with `acme-mv sample init`",
        table=spec.qualified,
    )


def check_schema(conn: Conn, specs: list[TableSpec], *, warn_unindexed: bool = True) -> None:
    """Raise :class:`SchemaDrift` unless every table and column matches the contract.

    Columns the contract does not state are ignored (the sync selects the
    contract's columns by name), so a column added at the source is harmless.
    ``warn_unindexed``: warn about an append table without an index on updated_at (what
    incremental reads need; change capture reads no table and passes False).
    """
    names = [s.name for s in specs]
    found: dict[str, dict[str, str]] = {}
    for table, column, type_ in conn.execute(_COLUMNS_SQL, (SCHEMA, names)).fetchall():
        table_cols = found.setdefault(str(table), {})
        if column is not None:
            table_cols[str(column)] = str(type_)
    for spec in specs:
        cols = found.get(spec.name)
        if cols is None:
            raise no_table(spec)
        for column, expected in spec.columns:
            actual = cols.get(column)
            if actual is None:
                raise SchemaDrift(
                    f"The source table {spec.qualified} has no "
                    f"column {column} ({expected}) that the "
                    f"contract states; restore it or update acme-mv",
                    table=spec.qualified,
                    column=column,
                    expected=expected,
                )
            if actual != expected:
                raise SchemaDrift(
                    f"The source column {spec.qualified}.{column} is {actual}, the contract states "
                    f"{expected}; sync copies in binary and needs the exact type",
                    table=spec.qualified,
                    column=column,
                    expected=expected,
                    actual=actual,
                )
    if not warn_unindexed:
        return
    indexed = set(
        conn.cursor(row_factory=scalar_row)
        .execute(UPDATED_AT_INDEXED_SQL, (SCHEMA, names))
        .fetchall()
    )
    for spec in specs:
        if spec.kind == "append" and spec.name not in indexed:
            log.warning(
                "%s has no index on updated_at: every incremental read scans the table "
                "(CREATE INDEX CONCURRENTLY ON %s (updated_at))",
                spec.qualified,
                spec.qualified,
            )


def select_all(spec: TableSpec) -> sql.Composed:
    """``SELECT <contract columns> FROM operations.<t>``: every row, the contract's columns."""
    return sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names),
        sql.Identifier(SCHEMA, spec.name),
    )
