"""The one registry of summaries and reports, read from the files of ``views/`` (docs/extending.md).

- A **summary** is a file ``views/summaries/<name>.sql``: the groups of one
  report family from scratch over the latest-state tables (what
  ``refresh --rebuild`` writes and ``verify`` compares with). Its header gives
  its ``keys``, what it ``counts`` and the union ``view`` (``schema.view.column``)
  the readers see it through; ``unique`` (optional, default the keys) is the
  unique key of its historic and current tables, the refresh's
  ``ON CONFLICT`` target (``md5(status)`` for a text key of any length).
  Its tables are ``analytics.<name>_historic``,
  ``_current`` and ``_delta``; a batch writes its delta with
  ``views/deltas/<name>.sql`` (a batch into an empty state: the summary itself,
  over the state that batch made).
- A **report** is a view file ``views/reports/<schema>.<name>.sql`` with a
  ``-- report:`` header: ``ORDER BY <columns>`` (an export sorts the view) or
  ``TOP`` (the view is a top-N ranking ending in ``LIMIT n``: an export runs
  the view's own SELECT with ``LIMIT`` the asked n, so the ranking is defined
  once, in that file, and its ``LIMIT`` is the default n).

Reports are listed family by family (the summaries by name), and within a
family in dependency order: ``open_orders, top_dates, pending_items,
top_customers``, the contract's order.

Two words are kept apart: an order is **open** when its status is not NULL and
not ``COMPLETED``; it is **pending** when its status is ``PENDING``. The
``pending_items`` report counts the items of *open* orders (its name is the
contract's), ``top_customers`` counts *PENDING* orders (summary ``pending_orders``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from acme_mv import sqlfiles
from acme_mv.reports import views
from acme_mv.reports.views import View

if TYPE_CHECKING:
    from psycopg import sql

SCHEMA = "analytics"

_LIMIT = re.compile(r"\s+LIMIT\s+(?P<n>\d+)\s*$")
_RELATION = re.compile(r"\b(?P<name>[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*)\b(?P<alias>\s+AS\s+\w+)?")


@dataclass(frozen=True, kw_only=True)
class Summary:
    """One summary (``views/summaries/<name>.sql``)."""

    name: str
    keys: tuple[str, ...]
    #: what one unit of ``n`` is
    counts: str
    #: the union view the readers query, and its column holding ``n``
    view: str
    column: str
    #: the summary from scratch over the latest-state tables: ``keys..., n``
    from_state: str
    #: the unique key of its historic and current tables (columns or expressions of them)
    unique: tuple[str, ...] = ()

    def table(self, part: str) -> sql.Identifier:
        """``analytics.<name>_<part>``, part one of historic, current, delta."""
        from psycopg import sql

        return sql.Identifier(SCHEMA, f"{self.name}_{part}")

    @property
    def columns(self) -> sql.Composable:
        from psycopg import sql

        return sql.SQL(", ").join(sql.Identifier(k) for k in self.keys)

    @property
    def conflict(self) -> sql.Composable:
        """The ``ON CONFLICT`` target of an upsert into its historic or current table."""
        from psycopg import sql

        if not self.unique:
            return self.columns
        return sql.SQL(", ").join(sql.SQL(u) for u in self.unique)  # a header of views/summaries/

    @property
    def file(self) -> str:
        return f"views/summaries/{self.name}.sql"

    @property
    def delta(self) -> str:
        """A batch's signed change of the summary (``views/deltas/<name>.sql``), over the
        batch's temp tables (``views/state/order_changes.sql``, ``item_changes.sql``)."""
        return sqlfiles.text(f"deltas/{self.name}.sql")

    @property
    def state_tables(self) -> tuple[str, ...]:
        """The latest-state tables it reads (``staging.<table>_state``), in order of appearance."""
        return tuple(dict.fromkeys(re.findall(r"\bstaging\.\w+_state\b", self.from_state)))


@dataclass(frozen=True, kw_only=True)
class Report:
    """One report: a view of ``views/reports/`` with a ``-- report:`` header."""

    name: str
    view: View
    #: the export's ORDER BY (None for a ranked report, which is ordered by its view)
    order: str | None
    #: the summary it reads
    summary: str

    @property
    def ranked(self) -> bool:
        return self.order is None

    @property
    def file(self) -> str:
        return f"views/reports/{self.view.qualified}.sql"

    @property
    def ranking(self) -> str:
        """A ranked report's SELECT without its ``LIMIT``."""
        return _LIMIT.sub("", self.view.definition)

    @property
    def default_limit(self) -> int | None:
        match = _LIMIT.search(self.view.definition)
        return int(match["n"]) if match and self.ranked else None

    def query(self) -> sql.Composable:
        """The report's SELECT over the views in the database, ordered as the contract says
        (a ranked report without its ``LIMIT``: the caller appends the asked n)."""
        from psycopg import sql

        if self.ranked:
            return sql.SQL(self.ranking)  # a file of views/reports/
        return sql.SQL("SELECT * FROM {} AS r ORDER BY {}").format(
            sql.Identifier(self.view.schema, self.view.name),
            sql.SQL(self.order or ""),  # the header of a file of views/reports/
        )

    def query_over(self, replace: Mapping[str, str]) -> sql.Composable:
        """The same SELECT with the views it reads inlined and the relations in ``replace``
        (``schema.name`` -> a SELECT) read instead: the report over other summary rows."""
        from psycopg import sql

        if self.ranked:
            return sql.SQL(inline(self.ranking, replace))
        return sql.SQL("SELECT * FROM ({}) AS r ORDER BY {}").format(
            sql.SQL(inline(self.view.definition, replace)), sql.SQL(self.order or "")
        )


def inline(definition: str, replace: Mapping[str, str]) -> str:
    """``definition`` with every relation named in ``replace`` read as that SELECT, and every
    view of ``views/reports/`` it reads replaced by its own definition (recursively)."""
    by_name = {v.qualified: v for v in report_views()}

    def sub(match: re.Match[str]) -> str:
        name = match["name"]
        if name in replace:
            body = replace[name]
        elif name in by_name:
            body = inline(by_name[name].definition, replace)
        else:
            return match[0]
        if not match["alias"]:  # PostgreSQL 15 needs an alias on a subquery in FROM
            raise ValueError(f"{name} is read without an alias (AS x): it cannot be inlined")
        return f"({body}){match['alias']}"

    return _RELATION.sub(sub, definition)


@functools.cache
def report_views() -> tuple[View, ...]:
    """Every view of ``views/reports/``, in dependency order."""
    return tuple(views.load_dir())


@functools.cache
def summaries() -> tuple[Summary, ...]:
    found = []
    for f in sqlfiles.layer("summaries"):
        missing = {"keys", "counts", "view"} - f.headers.keys()
        if missing:
            raise ValueError(f"views/{f.name}: header lacks {', '.join(sorted(missing))}")
        view, _, column = f.headers["view"].rpartition(".")
        found.append(
            Summary(
                name=f.stem,
                keys=tuple(k.strip() for k in f.headers["keys"].split(",")),
                counts=f.headers["counts"],
                view=view,
                column=column,
                from_state=f.text,
                unique=tuple(
                    u.strip() for u in f.headers.get("unique", "").split(",") if u.strip()
                ),
            )
        )
    return tuple(found)


def _reads(view: View, table: str, all_views: tuple[View, ...]) -> bool:
    if re.search(rf"\b{re.escape(table)}\b", view.definition):
        return True
    return any(view.references(o) and _reads(o, table, all_views) for o in all_views if o != view)


@functools.cache
def reports() -> tuple[Report, ...]:
    """Every report, family by family (summaries by name), each family in dependency order."""
    all_views = report_views()
    found: list[Report] = []
    for s in summaries():
        historic = f"{SCHEMA}.{s.name}_historic"
        for v in all_views:
            header = sqlfiles.load(f"reports/{v.qualified}.sql").headers.get("report")
            if header is None or not _reads(v, historic, all_views):
                continue
            if any(r.name == v.name for r in found):  # reads more than one summary
                continue
            if header.startswith("ORDER BY "):
                order: str | None = header.removeprefix("ORDER BY ").strip()
            elif header.startswith("TOP"):
                if not _LIMIT.search(v.definition):
                    raise ValueError(f"{v.qualified}: a TOP report's SELECT ends in LIMIT n")
                order = None
            else:
                raise ValueError(f"{v.qualified}: `-- report:` is ORDER BY <columns> or TOP")
            found.append(Report(name=v.name, view=v, order=order, summary=s.name))
    return tuple(found)


def default_limit() -> int:
    """The n of the top-N reports: the ``LIMIT`` of their views (they agree)."""
    limits = {r.default_limit for r in reports() if r.ranked}
    if len(limits) != 1:
        raise ValueError(f"the TOP views of views/reports/ disagree on their LIMIT: {limits}")
    (n,) = limits
    assert n is not None
    return n
