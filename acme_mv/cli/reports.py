"""``acme-mv refresh``, ``verify``, ``export`` and ``check``: thin skins over the reports API."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import typer

from acme_mv.cli import common
from acme_mv.errors import GAPS_EXIT_CODE, BadArgument
from acme_mv.reports import registry

log = logging.getLogger("acme_mv.cli")

#: exit code of ``check --fail-on-gaps`` when a gap was found (1 is an error, 3 busy)


def refresh(
    historic: Annotated[
        bool,
        typer.Option("--historic", help="Fold into the historic part now (normally once a day)."),
    ] = False,
    current: Annotated[
        bool,
        typer.Option("--current", help="Add the new batches only, never fold, even on a new day."),
    ] = False,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild", help="Recompute every report from scratch from the latest staged state."
        ),
    ] = False,
) -> None:
    """Refresh the reports: add the new batches' deltas;
    on a new day fold them into the historic part.

    A refresh costs what changed since the previous one. Readers are never blocked and never
    see a mix of old and new.

    Examples:

      acme-mv refresh

      acme-mv refresh --historic

      acme-mv refresh --rebuild
    """
    from acme_mv.reports import refresh as refresh_api

    if historic + current + rebuild > 1:
        raise BadArgument("Use one of --historic, --current and --rebuild")
    mode: refresh_api.RefreshMode = (
        "historic" if historic else "current" if current else "rebuild" if rebuild else "auto"
    )
    result = refresh_api.refresh(common.settings(), mode=mode)
    what = f"historic + current ({result.reason})" if result.rebuilt_historic else "current"
    common.out.print(
        f"refreshed {what} in {result.total_seconds:.2f}s; "
        f"snapshot batch {result.historic_batch_id}, "
        "up to batch "
        f"{result.refreshed_batch_id if result.refreshed_batch_id is not None else '-'}",
        markup=False,
        highlight=False,
    )


def export(
    report: Annotated[
        str | None,
        typer.Argument(
            help=f"One of: {', '.join(r.name for r in registry.reports())}.",
            show_default=False,
            metavar="REPORT",
        ),
    ] = None,
    all_reports: Annotated[bool, typer.Option("--all", help="Export every report.")] = False,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="File to write; `-` writes to stdout.", show_default=False
        ),
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
            help=(
                "The report as the warehouse knew it then ('2026-11-25 "
                "17:00', in --timezone unless an offset is given)."
            ),
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
    from acme_mv.reports import export as export_api

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
            settings,
            report,
            output=target,
            output_dir=output_dir,
            fmt=chosen,
            limit=limit,
            force=force,
            as_of=moment,
        )
        paths = [path] if path is not None else []
    for path in paths:
        common.out.print(str(path), markup=False, highlight=False)


def detail(
    report: Annotated[
        str,
        typer.Argument(
            help=f"One of: {', '.join(r.name for r in registry.reports())}.",
            show_default=False,
            metavar="REPORT",
        ),
    ],
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--where",
            "-w",
            help=(
                "COLUMN=VALUE of the report row (repeat for each key column; "
                'an empty value is NULL, "" the empty string). A key column left out is not '
                "filtered."
            ),
            metavar="COLUMN=VALUE",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        str, typer.Option("--output", "-o", help="File to write; `-` writes to stdout.")
    ] = "-",
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv or json.")] = "csv",
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="Rows to write at most (the total counts all).")
    ] = 1000,
) -> None:
    """Write the orders (order items for pending_items) behind a report row, with customer and
    product names, as of the same refresh as the report.

    The key columns: open_orders delivery_date and status; top_dates delivery_date;
    pending_items product_id; top_customers customer_id. The total (the report row's number)
    goes to stderr.

    Examples:

      acme-mv detail open_orders -w delivery_date=2026-12-17 -w status=PENDING

      acme-mv detail top_dates --where delivery_date= --format json

      acme-mv detail pending_items -w product_id=42 -n 50 -o items.csv
    """
    from acme_mv.reports import detail as detail_api

    if fmt not in ("csv", "json"):
        raise BadArgument(f"Unknown format {fmt!r}; use csv or json")
    common.int_in_range(limit, "--limit", 1, 2**63 - 1)
    key = detail_api.parse_where(where or [])
    found = detail_api.read(common.settings(), report, key, limit=limit)
    chosen: Literal["csv", "json"] = "csv" if fmt == "csv" else "json"
    if output == "-":
        detail_api.write(found, sys.stdout, fmt=chosen)
    else:
        try:
            with open(output, "w", encoding="utf-8", newline="") as fh:
                detail_api.write(found, fh, fmt=chosen)
        except OSError as exc:
            raise BadArgument(f"Cannot write {output}: {exc.strerror or exc}") from None
    log.info(
        "%s: %d rows, total %d (as of batch %d)", report, found.count, found.total, found.batch_id
    )
    if found.truncated:
        log.warning("wrote %d of %d rows; raise --limit for more", len(found.rows), found.count)


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
    """Count data-quality gaps in staging: orphan items, orders without items, unknown customers
    and products, NULL statuses and delivery dates, rows deleted at the source (sync --full due).

    One pass over staging per check; the deleted-rows
    gaps also count keys on the source (docs/reports.md).

    Examples:

      acme-mv check

      acme-mv check --json --fail-on-gaps
    """
    from acme_mv.reports import check as check_api

    gaps = check_api.check(common.settings())
    if as_json:
        common.out.print(
            json.dumps([asdict(g) for g in gaps], indent=2), markup=False, highlight=False
        )
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

    Exit 6 on any difference, with the count and the first differing groups, and
    exit 6 when the reports are behind staging (a batch committed after the last
    refresh). A full scan of the staged state: a diagnostic, not a step of every cycle.

    Example:

      acme-mv verify
    """
    from acme_mv.reports import verify as verify_api

    result = verify_api.verify(common.settings())
    common.out.print(
        f"verify: ok, {result.groups} report groups and {result.state_rows} staged keys match",
        markup=False,
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("refresh")(refresh)
    app.command("verify")(verify)
    app.command("export")(export)
    app.command("check")(check)
    app.command("detail")(detail)
