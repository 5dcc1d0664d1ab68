"""``acme-mv refresh``, ``run``, ``export`` and ``check``: thin skins over the reports API."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import typer

from acme_mv import check as check_api
from acme_mv import compact as compact_api
from acme_mv import export as export_api
from acme_mv import refresh as refresh_api
from acme_mv import runner
from acme_mv import verify as verify_api
from acme_mv.cli import common
from acme_mv.cli.delivery import daily_mail_hook
from acme_mv.errors import BadArgument

log = logging.getLogger("acme_mv.cli")

#: exit code of ``check --fail-on-gaps`` when a gap was found (1 is an error, 3 busy)
GAPS_EXIT_CODE = 4


def refresh(
    historic: Annotated[
        bool, typer.Option("--historic", help="Fold into the historic part now (normally once a day).")
    ] = False,
    current: Annotated[
        bool,
        typer.Option("--current", help="Add the new batches only, never fold, even on a new day."),
    ] = False,
    rebuild: Annotated[
        bool,
        typer.Option("--rebuild", help="Recompute every report from scratch from the latest staged state."),
    ] = False,
) -> None:
    """Refresh the reports: add the new batches' deltas; on a new day fold them into the historic part.

    A refresh costs what changed since the previous one. Readers are never blocked and never
    see a mix of old and new.

    Examples:

      acme-mv refresh

      acme-mv refresh --historic

      acme-mv refresh --rebuild
    """
    if historic + current + rebuild > 1:
        raise BadArgument("Use one of --historic, --current and --rebuild")
    mode: refresh_api.RefreshMode = (
        "historic" if historic else "current" if current else "rebuild" if rebuild else "auto"
    )
    result = refresh_api.refresh(common.settings(), mode=mode)
    what = f"historic + current ({result.reason})" if result.rebuilt_historic else "current"
    common.out.print(
        f"refreshed {what} in {result.total_seconds:.2f}s; snapshot batch {result.historic_batch_id}, "
        f"up to batch {result.refreshed_batch_id if result.refreshed_batch_id is not None else '-'}",
        markup=False,
        highlight=False,
    )


def run(
    interval: Annotated[
        str, typer.Option("--interval", help="Time between cycle starts: 10s, 500ms, 1m30s, 2h.")
    ] = "10s",
    once: Annotated[bool, typer.Option("--once", help="Run one good cycle and exit.")] = False,
    mail_at: Annotated[
        str | None,
        typer.Option("--mail-at", envvar="ACME_MV_MAIL_AT", help="Mail the reports daily after HH:MM (--timezone).", show_default=False),
    ] = None,
    mail_to: Annotated[
        list[str] | None,
        typer.Option("--mail-to", envvar="ACME_MV_MAIL_TO", help="Recipients of the daily mail: ADDR[,ADDR].", show_default=False),
    ] = None,
    cdc: Annotated[
        bool,
        typer.Option(
            "--cdc",
            help="Stream changes from the source's WAL (after `acme-mv cdc setup`) instead of cursor syncs.",
        ),
    ] = False,
    slot: Annotated[
        str, typer.Option("--slot", help="With --cdc: the replication slot to stream from.")
    ] = "acme_mv",
    keep_history: Annotated[
        str,
        typer.Option(
            "--keep-history",
            help="After each day's fold, drop history older than this (acme-mv compact): 35d, 12h or all.",
        ),
    ] = "35d",
    max_failures: Annotated[
        int | None,
        typer.Option(
            "--max-failures",
            help="Exit with the error after this many failed cycles in a row. Default: retry forever.",
            show_default=False,
        ),
    ] = None,
    max_backoff: Annotated[
        str, typer.Option("--max-backoff", help="Longest wait between retries (1s, doubling, up to this).")
    ] = "60s",
    full_every: Annotated[
        str | None,
        typer.Option(
            "--full-every",
            help="Re-copy orders/order_items from scratch (sync --full) when the last full copy is older: 1d, 12h.",
            show_default=False,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port", help="Serve Prometheus metrics on this port (/metrics).", show_default=False
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="Address the metrics server listens on.")
    ] = "127.0.0.1",
) -> None:
    """Sync then refresh, every --interval, until Ctrl-C or SIGTERM (a step in progress finishes first).

    One log line per cycle (rows synced, refresh seconds, freshness), one per failed cycle naming
    the server (warehouse or source). Failed cycles are retried with backoff, forever by default;
    only what retrying cannot fix (not migrated, schema drift, bad configuration, refused login,
    missing privilege) ends the loop. See docs/running.md.

    Examples:

      acme-mv run --interval 10s

      acme-mv run --once

      acme-mv run --metrics-port 9187 --full-every 1d

      acme-mv run --mail-at 07:00 --mail-to lead@example.com

      acme-mv run --cdc --metrics-port 9187
    """
    mail = daily_mail_hook(mail_at, mail_to)  # see `acme-mv mail --help` for the SMTP settings
    keep = compact_api.parse_keep(keep_history)
    every = common.duration_option(interval, "--interval")
    common.int_in_range(max_failures, "--max-failures", 1, 2**31)
    common.int_in_range(metrics_port, "--metrics-port", 0, 65535)
    policy = runner.RetryPolicy(max_s=common.duration_option(max_backoff, "--max-backoff"), max_failures=max_failures)
    full = None if full_every is None else common.duration_option(full_every, "--full-every")
    if cdc and (once or full is not None or mail is not None):
        raise BadArgument("--cdc streams continuously: drop --once, --full-every and the daily mail options")
    settings = common.settings()
    hook = runner.chain(mail, runner.compaction_hook(settings, keep))
    with contextlib.ExitStack() as stack:
        metrics = None
        if metrics_port is not None:
            from acme_mv import metrics as metrics_api

            metrics = metrics_api.Metrics()
            port = stack.enter_context(metrics_api.serve(metrics, port=metrics_port, host=metrics_host))
            log.info("serving Prometheus metrics on http://%s:%d/metrics", metrics_host, port)
        if cdc:
            runner.run_cdc(settings, slot=slot, retry=policy, metrics=metrics, keep=keep)
        else:
            runner.run(
                settings, interval=every, once=once, retry=policy, full_every=full, metrics=metrics, on_cycle=hook
            )


def export(
    report: Annotated[
        str | None,
        typer.Argument(help=f"One of: {', '.join(export_api.REPORTS)}.", show_default=False, metavar="REPORT"),
    ] = None,
    all_reports: Annotated[bool, typer.Option("--all", help="Export every report.")] = False,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="File to write; `-` writes to stdout.", show_default=False),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            help="Directory for default file names (created if missing). Default: the current one.",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv or json.")] = "csv",
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            "-n",
            help="Rows of top_dates / top_customers (default 3).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="The report as the warehouse knew it then ('2026-11-25 17:00', in --timezone unless an offset is given).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write a report (or --all) as CSV or JSON; prints the paths written.

    Default file: <report>_result_<YYYYmmdd_HHMMSS>.csv in --output-dir.

    Examples:

      acme-mv export open_orders

      acme-mv export top_customers --limit 10 --output -

      acme-mv export --all --output-dir exports --format json

      acme-mv export open_orders --as-of '2026-11-25 17:00' --output -
    """
    moment = _moment(as_of) if as_of is not None else None
    if fmt not in ("csv", "json"):
        raise BadArgument(f"Unknown format {fmt!r}; use csv or json")
    common.int_in_range(limit, "--limit", 1, export_api.MAX_LIMIT)
    chosen: Literal["csv", "json"] = "csv" if fmt == "csv" else "json"
    settings = common.settings()
    if all_reports:
        if report is not None or output is not None:
            raise BadArgument("--all writes every report to --output-dir; drop REPORT and --output")
        paths = export_api.export_all(
            settings, output_dir=output_dir, fmt=chosen, limit=limit, force=force, as_of=moment
        )
    else:
        if report is None:
            raise BadArgument(f"Name a report ({', '.join(export_api.REPORTS)}) or use --all")
        target: export_api.Output = "-" if output == "-" else (Path(output) if output else None)
        path = export_api.export(
            settings, report, output=target, output_dir=output_dir, fmt=chosen, limit=limit, force=force,
            as_of=moment,
        )
        paths = [path] if path is not None else []
    for path in paths:
        common.out.print(str(path), markup=False, highlight=False)


def _moment(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadArgument(f"--as-of {text!r} is not a time such as '2026-11-25 17:00'") from None


def check(
    fail_on_gaps: Annotated[
        bool, typer.Option("--fail-on-gaps", help=f"Exit {GAPS_EXIT_CODE} when any gap is found.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Count data-quality gaps in staging: orphan items, orders without items, unknown customers and products, NULL statuses and delivery dates, rows deleted at the source (sync --full due).

    One pass over staging per check; the deleted-rows gaps also count keys on the source (docs/sync.md).

    Examples:

      acme-mv check

      acme-mv check --json --fail-on-gaps
    """
    gaps = check_api.check(common.settings())
    if as_json:
        common.out.print(json.dumps([asdict(g) for g in gaps], indent=2), markup=False, highlight=False)
    else:
        for g in gaps:
            sample = f" (e.g. {g.key} {', '.join(map(str, g.samples))})" if g.samples else ""
            common.out.print(f"{g.count:>10}  {g.name}{sample}", markup=False, highlight=False)
    found = sum(g.count for g in gaps)
    if fail_on_gaps and found:
        log.error("%d gap(s) found", found)
        raise typer.Exit(GAPS_EXIT_CODE)


def verify() -> None:
    """Recompute every report from scratch and compare it with what readers see.

    Exit 6 on any difference, with the count and the first differing groups.
    A full scan of the staged state: a diagnostic, not a step of every cycle.

    Example:

      acme-mv verify
    """
    result = verify_api.verify(common.settings())
    common.out.print(
        f"verify: ok, {result.groups} report groups and {result.state_rows} staged keys match",
        markup=False,
        highlight=False,
    )


def compact(
    keep_history: Annotated[
        str, typer.Option("--keep-history", help="History to keep for --as-of and verify: 35d, 12h, or all.")
    ] = "35d",
) -> None:
    """Drop the staged versions and report deltas older than --keep-history (whole partitions).

    The current state and the reports are never touched; readers are never blocked.

    Examples:

      acme-mv compact

      acme-mv compact --keep-history 7d
    """
    result = compact_api.compact(common.settings(), keep=compact_api.parse_keep(keep_history))
    common.out.print(
        f"compacted: history kept from batch {result.history_batch_id}; {result.delta_rows_deleted} delta rows "
        f"and {len(result.partitions_dropped)} partitions dropped",
        markup=False,
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("refresh")(refresh)
    app.command("verify")(verify)
    app.command("compact")(compact)
    app.command("run")(run)
    app.command("export")(export)
    app.command("check")(check)
