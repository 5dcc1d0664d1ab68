"""The source rows behind a report row: the orders (or order items) one group counts.

Everything is derived from the registry (acme_mv.reports.registry), no report is named here:

- a report's **detail keys** are its columns that are keys of the summary it reads
  (``open_orders``: delivery_date, status; ``top_dates``: delivery_date; ``pending_items``:
  product_id; ``top_customers``: customer_id);
- its **rows** come from the summary's own SQL (``views/summaries/<name>.sql``, ``SELECT
  <keys>, count(*) | sum(x) AS n FROM ... WHERE ... GROUP BY <keys>``): the same FROM and
  WHERE, one row per row of the first relation (the table it counts: orders or order items,
  every column of its latest-state table), each worth 1 (``count(*)``) or ``x`` (``sum(x)``),
  with the customer's or product's name from the mirrors (today's names, as the reports);
- a group's **total** is the sum of those worths: the report row's number.

Same snapshot as the reports. One REPEATABLE READ transaction reads R
(``analytics.snapshot.refreshed_batch_id``, the newest batch the reports include) and the
newest staged batch. When they are equal the rows come from the latest-state tables; when a
batch was staged but not yet refreshed, every latest-state table is read as of R
(``views/state/_as_of.sql``: a key changed after R is its latest version up to R from the
version tables, tombstones excluded).
"""

from __future__ import annotations

import csv
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Literal

import psycopg
from psycopg import sql

from acme_mv import sqlfiles
from acme_mv.config import Settings
from acme_mv.db import Conn, connection, staging_only
from acme_mv.errors import BadArgument, NeverRefreshed, UnknownReport
from acme_mv.reports import registry
from acme_mv.revision import require_head
from acme_mv.staging.tables import TABLES

Format = Literal["csv", "json"]

#: rows returned by default; the total always counts every row of the group
DEFAULT_LIMIT = 1000

_SUMMARY = re.compile(
    r"^SELECT\s+(?P<select>.+?)\s+FROM\s+(?P<source>.+?)\s+WHERE\s+(?P<where>.+?)"
    r"\s+GROUP BY\s+.+$",
    re.DOTALL,
)
_MEASURE = re.compile(r"^(?P<agg>count|sum)\((?P<arg>.*)\)(::bigint)?\s+AS\s+n$", re.DOTALL)
_STATE = re.compile(r"\bstaging\.(?P<table>\w+)_state\s+AS\s+(?P<alias>\w+)")
_AS_OF = sqlfiles.text("state/_as_of.sql")


def _split(text: str) -> list[str]:
    """``text`` split at its top-level commas (not those inside parentheses)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


@dataclass(frozen=True, kw_only=True)
class Shape:
    """How one report's detail is read (derived from its summary's SQL)."""

    report: str
    #: the report's columns that pick a group: name -> the expression over the summary's FROM
    keys: dict[str, str]
    #: the staged table it counts (``orders`` or ``order_items``) and its alias in the FROM
    table: str
    alias: str
    #: the summary's FROM and WHERE, and what one row is worth
    source: str
    where: str
    measure: str


def _columns(view: str) -> list[str]:
    """The column names of a report view's (first) SELECT list."""
    select = re.match(r"^SELECT\s+(.+?)\s+FROM\s", view, re.DOTALL)
    assert select is not None, view
    return [re.split(r"[\s.]", item)[-1] for item in _split(select[1])]


@functools.cache
def shapes() -> dict[str, Shape]:
    """Every report's detail, by report name, from the registry."""
    summaries = {s.name: s for s in registry.summaries()}
    found = {}
    for report in registry.reports():
        summary = summaries[report.summary]
        parsed = _SUMMARY.match(summary.from_state)
        if parsed is None:
            raise ValueError(f"{summary.file}: is not the aggregate of a FROM, WHERE, GROUP BY")
        *key_exprs, last = _split(parsed["select"])
        measure = _MEASURE.match(last)
        counted = _STATE.search(parsed["source"])
        if measure is None or counted is None or len(key_exprs) != len(summary.keys):
            raise ValueError(f"{summary.file}: its SELECT is not <keys>, count(*) | sum(x) AS n")
        by_key = dict(zip(summary.keys, key_exprs, strict=True))
        found[report.name] = Shape(
            report=report.name,
            keys={c: by_key[c] for c in _columns(report.view.definition) if c in by_key},
            table=counted["table"],
            alias=counted["alias"],
            source=parsed["source"],
            where=parsed["where"],
            measure="1" if measure["agg"] == "count" else measure["arg"],
        )
    return found


def key_columns() -> dict[str, list[str]]:
    """Every report's detail key columns, by report name."""
    return {name: list(found.keys) for name, found in shapes().items()}


def shape(report: str) -> Shape:
    try:
        return shapes()[report]
    except KeyError:
        raise UnknownReport(
            f"Unknown report {report!r}; the reports are: {', '.join(shapes())}", name=report
        ) from None


def check_key(report: str, key: Mapping[str, str | None]) -> Shape:
    """The report's shape; :class:`BadArgument` when ``key`` names a column that is not one of
    its detail keys."""
    found = shape(report)
    for column in key:
        if column not in found.keys:
            raise BadArgument(
                f"{report} has no key column {column!r}; its keys are: {', '.join(found.keys)}"
            )
    return found


@dataclass(frozen=True, kw_only=True)
class Detail:
    report: str
    key: dict[str, str | None]
    columns: list[str]
    rows: list[tuple[object, ...]]
    #: what the group's rows add up to (the report row's number), over every row, not only those
    #: returned
    total: int
    #: rows in the group (``len(rows)`` unless truncated)
    count: int
    truncated: bool
    #: the batch the rows are as of (the reports' refreshed_batch_id)
    batch_id: int


def _state_columns(conn: Conn, table: str) -> list[tuple[str, str]]:
    """The columns of ``staging.<table>_state`` (name, type), without the bookkeeping ones."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute AS a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        (f"staging.{table}_state",),
    ).fetchall()
    return [(str(n), str(t)) for n, t in rows if not str(n).startswith("_")]


def _as_of(conn: Conn, table: str, r: int) -> str:
    """``staging.<table>_state`` as of batch ``r`` (a SELECT)."""
    columns = sql.SQL(", ").join(
        sql.Identifier("s", c) for c, _ in [*_state_columns(conn, table), ("_batch_id", "")]
    )
    return (
        sql.SQL(_AS_OF)
        .format(
            columns=columns,
            state=sql.Identifier("staging", f"{table}_state"),
            versions=sql.Identifier("staging", table),
            key=sql.Identifier(TABLES[table].key),
            r=sql.Literal(r),
        )
        .as_string(conn)
    )


def _names() -> dict[str, tuple[str, str]]:
    """A mirrored key column -> (its mirror table, the mirror's name column)."""
    return {
        spec.key: (spec.name, next(c for c in spec.column_names if c.endswith("_name")))
        for spec in TABLES.values()
        if spec.kind == "mirror"
    }


def _query(
    conn: Conn, found: Shape, key: Mapping[str, str | None], *, limit: int, as_of: int | None
) -> tuple[sql.Composed, list[str]]:
    row_columns = [c for c, _ in _state_columns(conn, found.table)]
    names = _names()
    select: list[sql.Composable] = []
    joins: list[sql.Composable] = []
    columns: list[str] = []
    for column in row_columns:
        select.append(sql.Identifier("d", column))
        columns.append(column)
        if column in names:
            mirror, name = names[column]
            alias = f"m_{mirror}"
            select.append(sql.Identifier(alias, name))
            columns.append(name)
            joins.append(
                sql.SQL("LEFT JOIN {} AS {} ON {} = {}").format(
                    sql.Identifier("staging", mirror),
                    sql.Identifier(alias),
                    sql.Identifier(alias, column),
                    sql.Identifier("d", column),
                )
            )
    source = found.source
    if as_of is not None:
        source = registry.inline(
            source,
            {
                f"staging.{m['table']}_state": _as_of(conn, m["table"], as_of)
                for m in _STATE.finditer(source)
            },
        )
    filters = [
        sql.SQL("({}) IS NOT DISTINCT FROM {}").format(sql.SQL(found.keys[k]), sql.Literal(v))
        for k, v in key.items()
    ]
    inner = sql.SQL(
        "SELECT {counted}, ({measure})::bigint AS _worth FROM {source} WHERE ({where}){filters}"
    ).format(
        counted=sql.SQL(", ").join(sql.Identifier(found.alias, c) for c in row_columns),
        measure=sql.SQL(found.measure),  # views/summaries/: the registry's files
        source=sql.SQL(source),
        where=sql.SQL(found.where),
        filters=sql.SQL("").join(sql.SQL(" AND ") + f for f in filters),
    )
    query = sql.SQL(
        "SELECT {select}, count(*) OVER () AS _count, sum(coalesce(d._worth, 0)) OVER () AS _total "
        "FROM ({inner}) AS d {joins} ORDER BY {order} LIMIT {limit}"
    ).format(
        select=sql.SQL(", ").join(select),
        inner=inner,
        joins=sql.SQL(" ").join(joins),
        order=sql.Identifier("d", row_columns[0]),
        limit=sql.Literal(limit),
    )
    return query, columns


def _check_values(conn: Conn, found: Shape, key: Mapping[str, str | None]) -> None:
    """:class:`BadArgument` naming the first value its key column's type does not accept."""
    types = dict(_state_columns(conn, found.table))
    for column, value in key.items():
        if value is None:
            continue
        type_ = types.get(found.keys[column].rpartition(".")[2])
        if type_ is None:
            continue
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("SELECT CAST({} AS {})").format(sql.Literal(value), sql.SQL(type_))
                )
        except psycopg.DataError:
            raise BadArgument(
                f"{column} {value!r} is not a {type_} value; give {column}=<{type_}> "
                f"(an empty value is NULL)"
            ) from None


def detail(
    conn: Conn, report: str, key: Mapping[str, str | None], *, limit: int = DEFAULT_LIMIT
) -> Detail:
    """The rows behind ``report``'s group ``key`` (a subset of its detail keys: the columns left
    out are not filtered; a None value is NULL), at the reports' snapshot, on ``conn`` (not in a
    transaction: this opens its own REPEATABLE READ one)."""
    found = check_key(report, key)
    if limit < 1:
        raise BadArgument(f"--limit must be at least 1, not {limit}")
    _check_values(conn, found, key)
    previous = conn.isolation_level
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT refreshed_batch_id, (SELECT coalesce(max(batch_id), 0) "
                "FROM staging.sync_batches) FROM analytics.snapshot"
            ).fetchone()
            if row is None or row[0] is None:
                raise NeverRefreshed(
                    "The analytics views have never been refreshed. Run `acme-mv refresh` first"
                )
            r, newest = int(row[0]), int(row[1])
            query, columns = _query(conn, found, key, limit=limit, as_of=r if newest > r else None)
            rows = conn.execute(query).fetchall()
    finally:
        conn.isolation_level = previous
    count = int(rows[0][-2]) if rows else 0
    return Detail(
        report=report,
        key=dict(key),
        columns=columns,
        rows=[tuple(r[:-2]) for r in rows],
        total=int(rows[0][-1]) if rows else 0,
        count=count,
        truncated=count > len(rows),
        batch_id=r,
    )


def read(
    settings: Settings, report: str, key: Mapping[str, str | None], *, limit: int = DEFAULT_LIMIT
) -> Detail:
    """:func:`detail` on a new warehouse connection."""
    check_key(report, key)  # a usage error before any connection
    with connection(settings.database_url, role="warehouse", autocommit=True) as conn:
        require_head(conn)
        with staging_only("`detail`", "run it as the warehouse role"):
            return detail(conn, report, key, limit=limit)


def parse_where(items: list[str]) -> dict[str, str | None]:
    """``["delivery_date=2026-12-17", "status="]`` -> the key (an empty value is NULL, ``""``
    the empty string; the value is everything after the first ``=``)."""
    key: dict[str, str | None] = {}
    for item in items:
        column, sep, value = item.partition("=")
        if not sep or not column.strip():
            raise BadArgument(f"--where {item!r} is not COLUMN=VALUE (e.g. status=PENDING)")
        key[column.strip()] = None if value == "" else "" if value == '""' else value
    return key


def _json_value(value: object) -> object:
    return value if value is None or isinstance(value, int | float) else str(value)


def write(found: Detail, fh: IO[str], *, fmt: Format) -> None:
    """The rows as CSV (NULL an empty field, with a header) or a JSON array of objects."""
    if fmt == "csv":
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(found.columns)
        out.writerows(["" if v is None else v for v in r] for r in found.rows)
        return
    lines = [
        json.dumps(dict(zip(found.columns, map(_json_value, r), strict=True)), ensure_ascii=False)
        for r in found.rows
    ]
    fh.write("[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n")
