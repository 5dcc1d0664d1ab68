"""The reports as delivered: ``acme-mv export``'s CSV text and the moment the data is fresh as of.

Every report is written by :func:`acme_mv.reports.export.write_csv`, the export's own
code path, so an attachment or a dashboard download equals ``acme-mv export``'s
file byte for byte. All reports and the freshness are read in ONE
``REPEATABLE READ`` transaction: they describe one refresh, never a mix.

Freshness ("as of"): :func:`acme_mv.run.health.read_freshness`, the one definition
status and metrics use too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import args_row

from acme_mv.db import Conn, UnexpectedResult, one_value
from acme_mv.reports.export import REPORTS, prepare_session, write_csv

_SNAPSHOT_SQL = "SELECT refreshed_at, refreshed_batch_id FROM analytics.snapshot"


@dataclass(frozen=True, kw_only=True)
class Freshness:
    """When the reports were last refreshed and how fresh their data is."""

    refreshed_at: datetime
    refreshed_batch_id: int | None
    #: the moment the data is fresh as of (see the module docstring)
    as_of: datetime

    @property
    def key(self) -> tuple[datetime, int | None]:
        """Changes exactly when a new refresh commits: the dashboard's cache key."""
        return (self.refreshed_at, self.refreshed_batch_id)

    def age_seconds(self, now: datetime) -> float:
        return max(0.0, (now - self.as_of).total_seconds())


def refresh_key(conn: Conn) -> tuple[datetime, int | None] | None:
    """The last refresh's (refreshed_at, refreshed_batch_id):
    one cheap row; None when never refreshed."""
    row = conn.cursor(row_factory=args_row(_refresh_key)).execute(_SNAPSHOT_SQL).fetchone()
    if row is None:
        raise UnexpectedResult("analytics.snapshot has no row (its migration inserts the one row)")
    refreshed_at, batch_id = row
    return None if refreshed_at is None else (refreshed_at, batch_id)


def _refresh_key(
    refreshed_at: datetime | None, refreshed_batch_id: int | None
) -> tuple[datetime | None, int | None]:
    return refreshed_at, refreshed_batch_id


def delivery_freshness(conn: Conn) -> Freshness | None:
    """The reports' freshness on this connection (:func:`acme_mv.run.health.read_freshness`,
    the one definition); None when they were never refreshed."""
    from acme_mv.run.health import read_freshness

    fresh = read_freshness(conn)
    if fresh.refreshed_at is None:
        return None
    return Freshness(
        refreshed_at=fresh.refreshed_at,
        refreshed_batch_id=fresh.refreshed_batch_id,
        as_of=fresh.read_at or fresh.refreshed_at,  # no batch row: a refresh before any sync
    )


@dataclass(frozen=True, kw_only=True)
class Tie:
    """A top report's cut falls inside a tie: ``tied`` rows rank at ``value``, ``shown`` of them
    are in the report (the ranking's order picked which)."""

    value: str
    tied: int
    shown: int


@dataclass(frozen=True, kw_only=True)
class ReportSet:
    """Some reports, as export's CSV text, and their common freshness."""

    freshness: Freshness
    #: report name -> CSV text exactly as ``acme-mv export`` writes it
    csv: dict[str, str]
    #: top report name -> the tie its cut falls in (read only when asked; absent: no tie cut)
    ties: dict[str, Tie] = field(default_factory=dict)

    def csv_bytes(self, name: str) -> bytes:
        """The bytes of ``acme-mv export NAME``'s file."""
        return self.csv[name].encode("utf-8")

    def table(self, name: str) -> tuple[list[str], list[list[str]]]:
        """The CSV parsed back: header and rows of text cells (NULL is "")."""
        header, *rows = list(csv.reader(io.StringIO(self.csv[name], newline="")))
        return header, rows


def read_reports(
    conn: Conn, names: Sequence[str] | None = None, *, ties: bool = False
) -> ReportSet | None:
    """Read ``names`` (default: every report) in one
    REPEATABLE READ transaction; None when never refreshed. ``ties``: also read, for each top
    report, whether its cut falls in a tie (:func:`cut_tie`).

    ``conn`` must be in autocommit mode (the transaction is opened here).
    """
    chosen = list(names) if names is not None else list(REPORTS)
    prepare_session(conn)
    saved = conn.isolation_level
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        with conn.transaction():
            fresh = delivery_freshness(conn)
            if fresh is None:
                return None
            texts: dict[str, str] = {}
            found: dict[str, Tie] = {}
            for name in chosen:
                buf = io.StringIO(newline="")
                write_csv(conn, name, buf)
                texts[name] = buf.getvalue()
                tie = cut_tie(conn, name, texts[name]) if ties else None
                if tie is not None:
                    found[name] = tie
    finally:
        conn.isolation_level = saved
    return ReportSet(freshness=fresh, csv=texts, ties=found)


def cut_tie(conn: Conn, name: str, text: str) -> Tie | None:
    """For a top report (``text``: its CSV), the tie its cut falls in, from its ranking view:
    the rows that rank with the last row shown, when some of them are left out. None for any
    other report, a report shorter than its limit, or a cut between two different values."""
    report = REPORTS[name]
    header, *rows = list(csv.reader(io.StringIO(text, newline="")))
    if not report.ranked or not rows or len(rows) < (report.default_limit or 0):
        return None
    column, value = header[-1], rows[-1][-1]  # a top report ends with its ranking value
    tied = one_value(
        conn,
        # compared as export's text: the CSV's value, whatever the column's type
        sql.SQL("SELECT count(*) FROM ({}\n) AS r WHERE r.{}::text = %s").format(
            report.query(), sql.Identifier(column)
        ),
        (value,),
        kind=int,
    )
    shown = sum(1 for r in rows if r[-1] == value)
    return Tie(value=value, tied=tied, shown=shown) if tied > shown else None
