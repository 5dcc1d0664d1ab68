"""The ``acme-mv`` command line: a thin typer skin over the Python API.

Each command parses its options, calls one API function and prints the result
with rich. Errors derived from :class:`acme_mv.errors.AcmeMvError` become one
red line on stderr and the error's exit code (1 unless stated); usage errors
exit 2; a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.text import Text

from acme_mv import __version__
from acme_mv.cli import cdc as cdc_cmd
from acme_mv.cli import common
from acme_mv.cli import delivery as delivery_cmd
from acme_mv.cli import demo as demo_cmd
from acme_mv.cli import grants as grants_cmd
from acme_mv.cli import migrate as migrate_cmd
from acme_mv.cli import reports as reports_cmd
from acme_mv.cli import sample as sample_cmd
from acme_mv.cli import sync as sync_cmd
from acme_mv.config import Settings, scrub
from acme_mv.db import first_line
from acme_mv.errors import AcmeMvError

app = typer.Typer(
    name="acme-mv",
    help=(
        "Fresh logistics reports over millions of orders, without analytical queries on the "
        "transactional database: COPY-based sync into staging, historic + current-day "
        "materialized views, union views, exports.\n\n"
        "Example: acme-mv demo"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        common.out.print(f"acme-mv {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="ACME_MV_DATABASE_URL",
            show_envvar=True,
            help="Warehouse URL (staging + analytics). Empty: libpq's PG* variables and service files.",
            show_default=False,
        ),
    ] = None,
    source_url: Annotated[
        str | None,
        typer.Option(
            "--source-url",
            envvar="ACME_MV_SOURCE_URL",
            show_envvar=True,
            help="Transactional source URL (schema `operations`). Default: the warehouse database.",
            show_default=False,
        ),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(
            "--timezone",
            envvar="ACME_MV_TIMEZONE",
            show_envvar=True,
            help="Time zone whose midnight is the day rollover of the historic views. Default: UTC.",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (debug).")] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    common.STATE.verbose = verbose
    common.STATE.debug = debug
    common.setup_logging(verbose=verbose, debug=debug)
    common.STATE.settings = Settings.from_env(
        database_url=database_url or "", source_url=source_url, timezone=timezone
    )


for module in (demo_cmd, migrate_cmd, sample_cmd, sync_cmd, reports_cmd, grants_cmd, delivery_cmd, cdc_cmd):
    module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and map errors to exit codes."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        # standalone mode: typer prints usage errors itself and exits 2
        app(args=args, prog_name="acme-mv")
    except KeyboardInterrupt:
        common.err.print("Interrupted", style="red")
        sys.exit(130)
    except AcmeMvError as exc:
        if debug:
            common.err.print_exception()
        settings = common.STATE.settings
        line = scrub(first_line(exc), settings.database_url, settings.source_url)
        common.err.print(Text.assemble(("Error: ", "bold red"), line), highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # anything else is a bug or an environment fault: still one line
        if debug:
            common.err.print_exception()
        settings = common.STATE.settings
        msg = scrub(f"{type(exc).__name__}: {first_line(exc)}", settings.database_url, settings.source_url)
        common.err.print(
            Text.assemble(("Unexpected error: ", "bold red"), msg, " (run with --debug for the traceback)"),
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
