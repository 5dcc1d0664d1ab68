"""acme-mv commands: ``sync`` (copy what changed into staging) and ``status``."""

from __future__ import annotations

import datetime as dt
import json
import logging
from contextlib import nullcontext
from typing import TYPE_CHECKING, Annotated

import typer

from acme_mv import defaults
from acme_mv.cli import common
from acme_mv.errors import BadArgument, Stale

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from acme_mv import cdc as cdc_api
    from acme_mv import sync as api

log = logging.getLogger("acme_mv.cli.sync")


class _LogLines:
    """One log line per table when stderr is not a terminal."""

    def start(self, table: str, mode: api.Mode) -> None:
        pass

    def advance(self, table: str, nbytes: int) -> None:
        pass

    def finish(self, result: api.TableResult) -> None:
        log.info(
            "%s: %s, %d rows read, %d new%s, %.2f s (%.0f rows/s), cursor %s",
            result.table,
            result.mode,
            result.rows_read,
            result.rows_new,
            f", {result.rows_deleted} deleted" if result.rows_deleted else "",
            result.seconds,
            result.rows_per_s,
            result.cursor.isoformat(sep=" "),
        )


class _Bars:
    """A rich progress bar per table (bytes and bytes/s while copying, rows at the end)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def start(self, table: str, mode: api.Mode) -> None:
        self.tasks[table] = self.progress.add_task(f"{table} ({mode})", total=None)

    def advance(self, table: str, nbytes: int) -> None:
        self.progress.advance(self.tasks[table], nbytes)

    def finish(self, result: api.TableResult) -> None:
        task = self.tasks[result.table]
        self.progress.update(
            task,
            total=max(result.bytes, 1),
            completed=max(result.bytes, 1),
            description=f"{result.table}: {result.rows_read:,} rows, {result.rows_per_s:,.0f}/s",
        )


def _progress_bars() -> Progress:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=common.err,
    )


def sync(
    table: Annotated[
        list[str] | None,
        typer.Option(
            "--table",
            "-t",
            help=f"Sync only this table (repeatable): {', '.join(defaults.TABLE_NAMES)}.",
            show_default=False,
        ),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Compare every source row: changed rows appended, deleted keys tombstoned.",
        ),
    ] = False,
    no_wait: Annotated[
        bool,
        typer.Option(
            "--no-wait", help="Exit 3 at once if another sync is running, instead of waiting."
        ),
    ] = False,
    fallback_lag: Annotated[
        str,
        typer.Option(
            "--fallback-lag",
            envvar="ACME_MV_SYNC_FALLBACK_LAG",
            show_envvar=True,
            help="How far to re-read behind the clock when the source role cannot see other "
            "sessions' transactions in pg_stat_activity: 5m, 90s, 300 (seconds).",
        ),
    ] = f"{defaults.DEFAULT_FALLBACK_LAG.total_seconds():g}s",
    lock_timeout: Annotated[
        str,
        typer.Option(
            "--lock-timeout",
            envvar="ACME_MV_SYNC_LOCK_TIMEOUT",
            show_envvar=True,
            help="How long to wait for source tables another "
            "session holds locked (a table rewrite) "
            "before exiting 3: 10m, 1h, 600 (seconds).",
        ),
    ] = f"{defaults.DEFAULT_LOCK_TIMEOUT.total_seconds():g}s",
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            help="Sessions for a first copy of orders and order_items into empty staging (block "
            "ranges in one snapshot, indexes built in parallel, attached at commit); 1: serial.",
        ),
    ] = defaults.DEFAULT_JOBS,
) -> None:
    """Copy what changed in the source into staging, as one batch (one transaction).

    orders and order_items: rows whose updated_at is at or after the cursor (and
    NULL ones), appended when new or changed; customers and products: reloaded
    whole. Safe to kill at any moment; a second sync waits for the first.

    Examples:

      acme-mv sync

      acme-mv sync --table orders --table order_items

      acme-mv sync --full --no-wait

      acme-mv sync --jobs 4
    """
    from acme_mv import sync as api

    lag = dt.timedelta(seconds=common.duration_option(fallback_lag, "--fallback-lag"))
    wait_s = common.duration_option(lock_timeout, "--lock-timeout")
    for name in table or ():
        if name not in api.TABLES:
            raise BadArgument(
                f"Unknown table {name!r} for --table; choose from {', '.join(api.TABLES)}"
            )
    settings = common.settings()
    bars = _progress_bars() if common.err.is_terminal else None
    with bars or nullcontext():
        result = api.sync(
            settings,
            tables=table or None,
            full=full,
            wait=not no_wait,
            progress=_Bars(bars) if bars else _LogLines(),
            fallback_lag=lag,
            lock_timeout=dt.timedelta(seconds=wait_s),
            jobs=jobs,
        )
    log.info("batch %d committed in %.2f s", result.batch_id, result.seconds)


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        from acme_mv.db import show_timestamp

        return show_timestamp(value, sep=" ", timespec="milliseconds")
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


#: width of the status table when stdout is not a terminal (every column fits)
STATUS_WIDTH = 160


def status(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (a list, one object per table).")
    ] = False,
    exact: Annotated[
        bool,
        typer.Option(
            "--exact", help="Count staged rows and distinct keys exactly (scans staging)."
        ),
    ] = False,
    max_age: Annotated[
        str | None,
        typer.Option(
            "--max-age",
            help=f"Exit {Stale.exit_code} when the reports "
            "are older than this (60s, 5m) or never "
            "refreshed: a health check.",
            show_default=False,
        ),
    ] = None,
    max_retained: Annotated[
        str,
        typer.Option(
            "--max-retained",
            help="With --max-age and change capture set up: exit 5 also when a slot retains "
            "more source WAL than this (10GB), or is invalidated or about to be.",
        ),
    ] = f"{defaults.DEFAULT_MAX_RETAINED // 1024**3}GB",
) -> None:
    """Show each table's cursor, last sync, staged rows and lag behind the source.

    Staged rows are the planner's estimate (pg_class.reltuples) unless --exact;
    lag is the source's max(updated_at) minus the cursor. With --exact, also
    the orders and order items deleted at the source since they were staged
    (only `sync --full` removes them; see docs/deploy-cursor-sync.md). Then when the reports
    were last refreshed and their freshness (now minus the moment of the source
    the reports are up to: docs/operate.md#monitoring).

    Examples:

      acme-mv status

      acme-mv status --json --exact

      acme-mv status --max-age 60s
    """
    from acme_mv import cdc as cdc_api
    from acme_mv import sync as api
    from acme_mv.db import staging_only
    from acme_mv.run import health

    limit = None if max_age is None else common.duration_option(max_age, "--max-age")
    retained = common.size_option(max_retained, "--max-retained")
    settings = common.settings()
    with staging_only(
        "`status`",
        "run it as the warehouse role; a reader sees the reports' freshness on the dashboard",
    ):
        fresh = health.freshness(settings)
        rows = api.status(settings, exact=exact)
        slots = [cdc_api.status(settings, slot=s) for s in cdc_api.slots(settings)]
        capture = [_describe_slot(st) for st in slots]
    if as_json:
        common.out.print_json(json.dumps([r.as_json() for r in rows]))
        for line in [*capture, fresh.describe()]:
            log.info("%s", line)
    else:
        _print_status_table(rows)
        for line in [*capture, fresh.describe()]:
            common.out.print(line, markup=False, highlight=False)
    if limit is not None:
        health.require_fresh(fresh, limit)
        for st in slots:
            cdc_api.check_health(st, max_retained=retained)


def _describe_slot(st: cdc_api.Status) -> str:
    """One line on change capture's lag (the tables' lag columns are the cursor sync's)."""
    lag = "-" if st.lag_bytes is None else f"{st.lag_bytes:,} B"
    seconds = "-" if st.lag_s is None else f"{st.lag_s:.1f} s"
    return (
        f"change capture: slot {st.slot}, lag {lag} and {seconds} behind the source, "
        f"wal_status {st.wal_status or '-'}"
        f"{'' if st.exists else ' (the slot is missing on the source)'}; see acme-mv cdc status"
    )


def _print_status_table(rows: list[api.TableStatus]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="acme-mv sync status")
    columns = (
        "table",
        "cursor",
        "last sync",
        "seconds",
        "rows read",
        "rows copied",
        "staged rows",
        "keys",
        "lag s",
    )
    for name in (*columns, "deleted at source"):
        table.add_column(
            name, justify="left" if name in ("table", "cursor", "last sync") else "right"
        )
    for r in rows:
        staged = (
            _fmt(r.staged_rows)
            if r.staged_rows_exact or r.staged_rows is None
            else f"~{_fmt(r.staged_rows)}"
        )
        table.add_row(
            r.table,
            _fmt(r.cursor),
            _fmt(r.last_finished_at),
            _fmt(r.last_duration_s),
            _fmt(r.last_rows_read),
            _fmt(r.last_rows_copied),
            staged,
            _fmt(r.distinct_keys),
            _fmt(r.lag_s),
            _fmt(r.deleted_at_source),
        )
    # a terminal gets its own width; piped output is not cut to rich's default 80 columns
    console = (
        common.out if common.out.is_terminal else Console(file=common.out.file, width=STATUS_WIDTH)
    )
    console.print(table)
    for r in rows:
        if r.deleted_at_source:
            log.warning(
                "%s: %s staged row(s) were deleted at the "
                "source; run `acme-mv sync --full` to remove them",
                r.table,
                f"{r.deleted_at_source:,}",
            )


def compact(
    keep_history: Annotated[
        str,
        typer.Option(
            "--keep-history", help="History to keep for --as-of and verify: 35d, 12h, or all."
        ),
    ] = "35d",
) -> None:
    """Drop the staged versions and report deltas older than --keep-history (whole partitions).

    The current state and the reports are never touched; readers are never blocked.

    Examples:

      acme-mv compact

      acme-mv compact --keep-history 7d
    """
    from acme_mv.staging import compact as compact_api

    result = compact_api.compact(common.settings(), keep=compact_api.parse_keep(keep_history))
    common.out.print(
        f"compacted: history kept from batch {result.history_batch_id}; "
        f"{result.delta_rows_deleted} delta rows "
        f"and {len(result.partitions_dropped)} partitions dropped",
        markup=False,
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``sync`` and ``status`` to the app."""
    app.command("sync")(sync)
    app.command("status")(status)
    app.command("compact")(compact)
