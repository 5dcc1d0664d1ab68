"""Export the four reports as CSV or JSON files (or to stdout).

CSV is produced by the server, ``COPY (SELECT ...) TO STDOUT (FORMAT csv,
HEADER)``, and streamed block by block into a temporary file next to the
target, renamed into place at the end: a reader never sees half a file.
JSON is one array with one object per row (``row_to_json`` of each row,
streamed from the server in the report's order), so numbers stay numbers,
NULL is ``null`` and dates are ``"YYYY-MM-DD"``.

Every report is a view of ``views/reports/`` (acme_mv.reports.registry): a
sorted report reads its view (``analytics.open_orders``,
``analytics.pending_items``) with the ``ORDER BY`` of the view file's header;
a top report runs its view's own SELECT (``analytics.top_dates``,
``analytics.top_customers``: the ranking, defined there once) with ``LIMIT n``.

``as_of``: the report as the warehouse knew it at that moment, defined by load
batch: K = the newest batch finished at or before the moment. Every batch's
signed deltas are kept (``analytics.*_delta``) back to
``snapshot.history_batch_id``, so the report as of K = the report's own views
read with each summary's current part replaced by itself minus the deltas of
the batches in (K, R], plus those in (R, K] when K is newer than the last
refresh (R = ``refreshed_batch_id``; ``views/summaries/_current_as_of.sql``).
Exact for any K inside the kept history; outside it,
:class:`~acme_mv.errors.HistoryUnavailable`. Product and customer names are
today's (the mirrors keep no history).
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

from acme_mv import sqlfiles
from acme_mv.config import Settings
from acme_mv.db import Conn, connection, optional_value, staging_only
from acme_mv.errors import ExportError, HistoryUnavailable, NeverRefreshed, UnknownReport
from acme_mv.reports import registry
from acme_mv.revision import require_head

log = logging.getLogger(__name__)

Format = Literal["csv", "json"]
#: ``"-"`` means stdout
Output = Path | Literal["-"] | None

#: the n of top_dates / top_customers: the LIMIT of their views (views/reports/)
DEFAULT_LIMIT = registry.default_limit()
#: the date style the CSV dates are written in, whatever the server's default
DATESTYLE = "ISO, YMD"


#: every report, from the view files of views/reports/ (acme_mv.reports.registry, docs/extending.md)
REPORTS: dict[str, registry.Report] = {r.name: r for r in registry.reports()}


#: largest --limit: SQL's LIMIT is a bigint
MAX_LIMIT = 2**63 - 1


#: the rows of a summary's current part as of batch {k} (the summary tables hold up to {r})
_CURRENT_AS_OF = sqlfiles.text("summaries/_current_as_of.sql")


@dataclass(frozen=True, kw_only=True)
class AsOf:
    """A past moment resolved to load batches."""

    at: datetime
    #: the newest batch finished at or before ``at`` (0: none)
    batch_id: int
    #: the newest batch the summary tables hold
    refreshed_batch_id: int


def resolve_as_of(conn: Conn, at: datetime, *, timezone: str) -> AsOf:
    """The batches behind "as of ``at``" (naive: in
    ``timezone``); raise outside the kept history."""
    moment = at if at.tzinfo is not None else at.replace(tzinfo=ZoneInfo(timezone))
    row = conn.execute(
        "SELECT coalesce((SELECT max(batch_id) FROM "
        "staging.sync_batches WHERE finished_at <= %s), 0), "
        "coalesce(refreshed_batch_id, historic_batch_id, 0), history_batch_id, "
        "(SELECT finished_at FROM staging.sync_batches WHERE batch_id = history_batch_id) "
        "FROM analytics.snapshot",
        (moment,),
    ).fetchone()
    assert row is not None  # the migration inserts the one row
    k, r, floor, floor_at = row
    assert isinstance(k, int) and isinstance(r, int) and isinstance(floor, int)
    if k < floor:
        since = (
            f" (finished {floor_at:%Y-%m-%d %H:%M:%S %Z})" if isinstance(floor_at, datetime) else ""
        )
        raise HistoryUnavailable(
            f"Reports as of {moment:%Y-%m-%d %H:%M:%S %Z} "
            "are not kept: the history starts after batch "
            f"{floor}{since}. Keep more with `acme-mv compact --keep-history`",
            at=moment,
            history_batch_id=floor,
        )
    return AsOf(at=moment, batch_id=k, refreshed_batch_id=r)


def as_of_query(name: str, as_of: AsOf, *, limit: int | None = None) -> sql.Composable:
    """A report's SELECT as of ``as_of`` (``LIMIT``
    for the top reports, as :func:`report_query`)."""
    report = _report(name)
    current = {
        f"{registry.SCHEMA}.{s.name}_current": sql.SQL(_CURRENT_AS_OF)
        .format(
            keys=s.columns,
            current=s.table("current"),
            delta=s.table("delta"),
            k=sql.Literal(as_of.batch_id),
            r=sql.Literal(as_of.refreshed_batch_id),
        )
        .as_string()
        for s in registry.summaries()
    }
    # the report's own views, read over the summaries as of K instead of their current part
    return _limited(report, report.query_over(current), limit)


def report_query(name: str, *, limit: int | None = None) -> sql.Composable:
    """The SELECT of a report (with ``LIMIT`` for the top reports, default 3)."""
    report = _report(name)
    return _limited(report, report.query(), limit)


def _limited(report: registry.Report, query: sql.Composable, limit: int | None) -> sql.Composable:
    name = report.name
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
    as_of: datetime | None = None,
) -> Path | None:
    """Write one report (as of a past moment with ``as_of``);
    returns the file written (None for stdout)."""
    return _export_many(
        settings,
        [report],
        output=output,
        output_dir=output_dir,
        fmt=fmt,
        limit=limit,
        force=force,
        now=now,
        as_of=as_of,
    )[0]


def export_all(
    settings: Settings,
    *,
    output_dir: Path | None = None,
    fmt: Format = "csv",
    limit: int | None = None,
    force: bool = False,
    now: datetime | None = None,
    as_of: datetime | None = None,
) -> list[Path]:
    """Write every report to its default file name in
    ``output_dir``; ``limit`` applies to the top ones."""
    written = _export_many(
        settings,
        list(REPORTS),
        output=None,
        output_dir=output_dir,
        fmt=fmt,
        limit=limit,
        force=force,
        now=now,
        limit_ranked_only=True,
        as_of=as_of,
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
    as_of: datetime | None = None,
) -> list[Path | None]:
    limits = [limit if (_report(n).ranked or not limit_ranked_only) else None for n in names]
    queries = [report_query(n, limit=lim) for n, lim in zip(names, limits, strict=True)]
    moment = (now or datetime.now(UTC)).astimezone(ZoneInfo(settings.timezone))
    targets = [
        _target(n, output=output, output_dir=output_dir, fmt=fmt, at=moment, force=force)
        for n in names
    ]
    with connection(settings.database_url, role="warehouse", autocommit=True) as conn:
        require_head(conn)
        _require_refreshed(conn)
        prepare_session(conn)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # every report from one state
        history = (
            staging_only(
                "`export --as-of`",
                "run it as the warehouse role, or export the current report without --as-of",
            )
            if as_of is not None
            else contextlib.nullcontext()
        )
        with conn.transaction(), history:
            if as_of is not None:
                past = resolve_as_of(conn, as_of, timezone=settings.timezone)
                log.info("as of %s: batch %d", past.at, past.batch_id)
                queries = [
                    as_of_query(n, past, limit=lim) for n, lim in zip(names, limits, strict=True)
                ]
            for query, target in zip(queries, targets, strict=True):
                if target is None:
                    _write(conn, query, fmt, sys.stdout)
                    sys.stdout.flush()
                    continue
                with _atomic_file(target, force=force) as fh:
                    _write(conn, query, fmt, fh)
                log.debug("wrote %s", target)
    return targets


def prepare_session(conn: Conn) -> None:
    """The session settings every export writes under (date
    style, encoding), whatever the server's defaults."""
    conn.execute(sql.SQL("SET DateStyle = {}").format(sql.Literal(DATESTYLE)))
    conn.execute("SET client_encoding = 'UTF8'")


def write_csv(
    conn: Conn,
    report: str,
    fh: IO[str],
    *,
    limit: int | None = None,
) -> None:
    """One report's CSV, exactly as ``export`` writes it,
    into ``fh`` (on a :func:`prepare_session` connection).

    For callers that need the bytes of an export without a file (``acme_mv.delivery``).
    """
    _write(conn, report_query(report, limit=limit), "csv", fh)


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


def _report(name: str) -> registry.Report:
    try:
        return REPORTS[name]
    except KeyError:
        raise UnknownReport(
            f"Unknown report {name!r}; the reports are: {', '.join(REPORTS)}", name=name
        ) from None


def _target(
    name: str, *, output: Output, output_dir: Path | None, fmt: Format, at: datetime, force: bool
) -> Path | None:
    if output == "-":
        return None
    if output is not None:
        path = Path(output)
    else:
        if output_dir is not None:  # an explicit --output-dir is created when missing
            try:
                output_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ExportError(
                    f"Cannot create the directory {output_dir}: {exc.strerror or exc}",
                    path=output_dir,
                ) from None
        path = (output_dir or Path.cwd()) / default_name(name, fmt=fmt, at=at)
    if path.is_dir():
        raise ExportError(
            f"{path} is a directory; --output names a file (use --output-dir for a directory)",
            path=path,
        )
    folder = path.parent
    if not folder.is_dir():
        raise ExportError(f"Cannot write to {folder}: no such directory", path=folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(f"Cannot write to {folder}: the directory is not writable", path=folder)
    if path.exists() and not force:
        raise ExportError(f"{path} already exists. Use --force to overwrite it", path=path)
    return path


def _require_refreshed(conn: Conn) -> None:
    if optional_value(conn, "SELECT refreshed_at FROM analytics.snapshot", kind=datetime) is None:
        raise NeverRefreshed(
            "The analytics views have never been refreshed. Run `acme-mv refresh` first"
        )


def _write(conn: Conn, query: sql.Composable, fmt: Format, fh: IO[str]) -> None:
    if fmt == "csv":
        decoder = codecs.getincrementaldecoder("utf-8")()
        with conn.cursor().copy(
            sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(query)
        ) as copy:
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
        raise ExportError(f"Cannot write {path}: {exc.strerror or exc}", path=path) from None
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
        if path.exists() and not force:  # appeared while we wrote
            raise ExportError(f"{path} already exists. Use --force to overwrite it", path=path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
