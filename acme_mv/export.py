"""Export the four reports as CSV or JSON files (or to stdout).

CSV is produced by the server, ``COPY (SELECT ...) TO STDOUT (FORMAT csv,
HEADER)``, and streamed block by block into a temporary file next to the
target, renamed into place at the end: a reader never sees half a file.
JSON is one array with one object per row (``row_to_json`` of each row,
streamed from the server in the report's order), so numbers stay numbers,
NULL is ``null`` and dates are ``"YYYY-MM-DD"``.

Reports read the union views (``analytics.open_orders``,
``analytics.pending_items``) or the full rankings behind the top views
(``analytics.open_orders_by_date``, ``analytics.pending_orders_by_customer``)
with ``LIMIT n``.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from acme_mv.config import Settings
from acme_mv.db import connection
from acme_mv.errors import ExportError, NeverRefreshed, UnknownReport
from acme_mv.migrate import require_head

log = logging.getLogger(__name__)

Format = Literal["csv", "json"]
#: ``"-"`` means stdout
Output = Path | Literal["-"] | None

DEFAULT_LIMIT = 3
#: the date style the CSV dates are written in, whatever the server's default
DATESTYLE = "ISO, YMD"


@dataclass(frozen=True, kw_only=True)
class Report:
    name: str
    #: the report's SELECT, ordered as the contract says
    query: str
    #: whether ``limit`` applies (the top reports)
    ranked: bool = False


REPORTS: dict[str, Report] = {
    r.name: r
    for r in (
        Report(
            name="open_orders",
            query="SELECT delivery_date, status, open_orders FROM analytics.open_orders "
            "ORDER BY delivery_date NULLS LAST, status",
        ),
        Report(
            name="top_dates",
            query="SELECT delivery_date, open_orders FROM analytics.open_orders_by_date "
            "ORDER BY open_orders DESC, delivery_date ASC NULLS LAST",
            ranked=True,
        ),
        Report(
            name="pending_items",
            query="SELECT product_id, product_name, pending_items FROM analytics.pending_items "
            "ORDER BY product_id",
        ),
        Report(
            name="top_customers",
            query="SELECT customer_id, customer_name, pending_orders FROM analytics.pending_orders_by_customer "
            "ORDER BY pending_orders DESC, customer_id ASC",
            ranked=True,
        ),
    )
}


#: largest --limit: SQL's LIMIT is a bigint
MAX_LIMIT = 2**63 - 1


def report_query(name: str, *, limit: int | None = None) -> sql.Composable:
    """The SELECT of a report (with ``LIMIT`` for the top reports, default 3)."""
    report = _report(name)
    query: sql.Composable = sql.SQL(report.query)  # a named constant above
    if report.ranked:
        n = DEFAULT_LIMIT if limit is None else limit
        if not 1 <= n <= MAX_LIMIT:
            raise ExportError(f"--limit must be between 1 and {MAX_LIMIT}, not {n}")
        query = sql.SQL("{} LIMIT {}").format(query, sql.Literal(n))
    elif limit is not None:
        raise ExportError(f"--limit applies to top_dates and top_customers only, not to {name}")
    return query


def default_name(report: str, *, fmt: Format, at: datetime) -> str:
    """``<report>_result_<YYYYmmdd_HHMMSS>.<fmt>``."""
    return f"{report}_result_{at:%Y%m%d_%H%M%S}.{fmt}"


def export(
    settings: Settings,
    report: str,
    *,
    output: Output = None,
    output_dir: Path | None = None,
    fmt: Format = "csv",
    limit: int | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> Path | None:
    """Write one report; returns the file written (None for stdout)."""
    return _export_many(
        settings, [report], output=output, output_dir=output_dir, fmt=fmt, limit=limit, force=force, now=now
    )[0]


def export_all(
    settings: Settings,
    *,
    output_dir: Path | None = None,
    fmt: Format = "csv",
    limit: int | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> list[Path]:
    """Write every report to its default file name in ``output_dir``; ``limit`` applies to the top ones."""
    written = _export_many(
        settings, list(REPORTS), output=None, output_dir=output_dir, fmt=fmt, limit=limit, force=force, now=now,
        limit_ranked_only=True,
    )
    return [p for p in written if p is not None]


def _export_many(
    settings: Settings,
    names: list[str],
    *,
    output: Output,
    output_dir: Path | None,
    fmt: Format,
    limit: int | None,
    force: bool,
    now: datetime | None,
    limit_ranked_only: bool = False,
) -> list[Path | None]:
    queries = [
        report_query(n, limit=limit if (REPORTS[n].ranked or not limit_ranked_only) else None)
        for n in (_report(n).name for n in names)
    ]
    moment = (now or datetime.now(UTC)).astimezone(ZoneInfo(settings.timezone))
    targets = [_target(n, output=output, output_dir=output_dir, fmt=fmt, at=moment, force=force) for n in names]
    with connection(settings.database_url, role="warehouse", autocommit=True) as conn:
        require_head(conn)
        _require_refreshed(conn)
        conn.execute(sql.SQL("SET DateStyle = {}").format(sql.Literal(DATESTYLE)))
        conn.execute("SET client_encoding = 'UTF8'")
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # every report from one state
        with conn.transaction():
            for query, target in zip(queries, targets, strict=True):
                if target is None:
                    _write(conn, query, fmt, sys.stdout)
                    sys.stdout.flush()
                    continue
                with _atomic_file(target, force=force) as fh:
                    _write(conn, query, fmt, fh)
                log.debug("wrote %s", target)
    return targets


def fetch(
    settings: Settings, report: str, *, limit: int | None = None
) -> tuple[list[str], list[tuple[object, ...]]]:
    """A report's column names and rows, for display (``acme-mv demo``)."""
    query = report_query(report, limit=limit)
    with connection(settings.database_url, role="warehouse") as conn:
        require_head(conn)
        _require_refreshed(conn)
        cur = conn.execute(sql.SQL("{}").format(query))
        columns = [d.name for d in cur.description or ()]
        return columns, cur.fetchall()


def _report(name: str) -> Report:
    try:
        return REPORTS[name]
    except KeyError:
        raise UnknownReport(f"Unknown report {name!r}; the reports are: {', '.join(REPORTS)}") from None


def _target(name: str, *, output: Output, output_dir: Path | None, fmt: Format, at: datetime, force: bool) -> Path | None:
    if output == "-":
        return None
    if output is not None:
        path = Path(output)
    else:
        if output_dir is not None:  # an explicit --output-dir is created when missing
            try:
                output_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ExportError(f"Cannot create the directory {output_dir}: {exc.strerror or exc}") from None
        path = (output_dir or Path.cwd()) / default_name(name, fmt=fmt, at=at)
    if path.is_dir():
        raise ExportError(f"{path} is a directory; --output names a file (use --output-dir for a directory)")
    folder = path.parent
    if not folder.is_dir():
        raise ExportError(f"Cannot write to {folder}: no such directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(f"Cannot write to {folder}: the directory is not writable")
    if path.exists() and not force:
        raise ExportError(f"{path} already exists. Use --force to overwrite it")
    return path


def _require_refreshed(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    row = conn.execute("SELECT refreshed_at FROM analytics.snapshot").fetchone()
    if row is None or row[0] is None:
        raise NeverRefreshed("The analytics views have never been refreshed. Run `acme-mv refresh` first")


def _write(conn: psycopg.Connection[tuple[object, ...]], query: sql.Composable, fmt: Format, fh: IO[str]) -> None:
    if fmt == "csv":
        decoder = codecs.getincrementaldecoder("utf-8")()
        with conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(query)) as copy:
            for block in copy:
                fh.write(decoder.decode(bytes(block)))
        fh.write(decoder.decode(b"", final=True))
        return
    fh.write("[")
    first = True
    rows = conn.cursor().stream(sql.SQL("SELECT row_to_json(r)::text FROM ({}) AS r").format(query))
    for (line,) in rows:
        fh.write("\n" if first else ",\n")
        fh.write(str(line))
        first = False
    fh.write("\n]\n" if not first else "]\n")


def _file_mode() -> int:
    """0o666 minus the process umask: what ``open()`` would have created (mkstemp makes 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


@contextlib.contextmanager
def _atomic_file(path: Path, *, force: bool) -> Iterator[IO[str]]:
    """A temp file in the target's directory, renamed onto ``path`` when complete."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise ExportError(f"Cannot write {path}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
        if path.exists() and not force:  # appeared while we wrote
            raise ExportError(f"{path} already exists. Use --force to overwrite it")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
