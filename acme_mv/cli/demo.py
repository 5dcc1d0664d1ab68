"""``acme-mv demo``: the whole pipeline on an embedded PostgreSQL with sample data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from acme_mv.cli import common


def demo(
    orders: Annotated[
        int,
        typer.Option("--orders", min=1, help="Sample orders to generate (about 26 items each)."),
    ] = 20_000,
    reset: Annotated[
        bool, typer.Option("--reset", help="Drop the demo databases and start over.")
    ] = False,
    simulate: Annotated[
        str,
        typer.Option(
            "--simulate",
            help=(
                "How long to run the live workload (5s, 1m, "
                "plain seconds), then sync + refresh again."
            ),
        ),
    ] = "5s",
    output_dir: Annotated[
        Path, typer.Option("--output-dir", help="Where the CSV exports go.")
    ] = Path("exports"),
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help=(
                "Then serve the dashboard on the demo data until Ctrl-C; with "
                "--simulate > 0 the workload and sync + refresh go on meanwhile."
            ),
        ),
    ] = False,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="The dashboard's port (with --serve).")
    ] = 8765,
) -> None:
    """Run the whole job on an embedded PostgreSQL with sample data and show the four reports.

    The embedded server keeps its data in the per-user cache directory
    (~/.cache/acme-mv, or $ACME_MV_CACHE_DIR) and is reused by the next run.

    Examples:

      acme-mv demo

      acme-mv demo --orders 200000 --reset

      acme-mv demo --simulate 0 --output-dir /tmp/acme-exports

      acme-mv demo --serve --port 8765
    """
    from rich.table import Table

    from acme_mv.demo import run_demo

    simulate_s = common.duration_option(simulate, "--simulate")
    settings = common.settings()
    result = run_demo(
        orders=orders,
        reset=reset,
        simulate_seconds=simulate_s,
        output_dir=output_dir,
        timezone=settings.timezone,
    )
    for name, (columns, rows) in result.reports.items():
        table = Table(title=name, title_justify="left", show_lines=False)
        for col in columns:
            table.add_column(
                col,
                justify="right"
                if col in {"open_orders", "pending_items", "pending_orders"}
                else "left",
            )
        shown = rows[:15]
        for row in shown:
            table.add_row(*("NULL" if v is None else str(v) for v in row))
        if len(rows) > len(shown):
            table.caption = f"{len(shown)} of {len(rows)} rows; all of them in the CSV export"
        common.out.print(table)
    for path in result.exported:
        common.out.print(f"wrote {path}", highlight=False)
    total = sum(result.timings.values())
    common.err.print(
        f"demo finished in {total:.1f} s: "
        + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()),
        soft_wrap=True,
    )
    if serve:
        from contextlib import nullcontext

        from acme_mv.delivery.dashboard.app import serve as serve_dashboard
        from acme_mv.demo import live

        common.err.print(f"dashboard: http://127.0.0.1:{port}/ (Ctrl-C stops it)", highlight=False)
        # with --simulate, the workload and the sync + refresh cycles go on while the page is open
        with live(result.settings) if simulate_s > 0 else nullcontext():
            serve_dashboard(result.settings.database_url, port=port, timezone=settings.timezone)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
