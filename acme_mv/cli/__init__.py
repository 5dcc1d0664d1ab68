"""The ``acme-mv`` command line: a thin typer skin over the Python API.

Each command parses its options, calls one API function and prints the result
with rich. Errors derived from :class:`acme_mv.errors.AcmeMvError` become one
line on stderr and the error's exit code (1 unless stated); usage errors
(typer's own and :class:`~acme_mv.errors.BadArgument`) exit 2 with one line;
a traceback is shown only with ``--debug``. Global options are accepted before
or after the command (:func:`common.hoist_global_options`).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer._click import exceptions as click_exc

from acme_mv import __version__
from acme_mv.cli import cdc as cdc_cmd
from acme_mv.cli import common
from acme_mv.cli import delivery as delivery_cmd
from acme_mv.cli import demo as demo_cmd
from acme_mv.cli import grants as grants_cmd
from acme_mv.cli import migrate as migrate_cmd
from acme_mv.cli import reports as reports_cmd
from acme_mv.cli import run as run_cmd
from acme_mv.cli import sample as sample_cmd
from acme_mv.cli import sync as sync_cmd
from acme_mv.config import Settings, scrub
from acme_mv.errors import INTERRUPTED_EXIT_CODE as INTERRUPTED
from acme_mv.errors import AcmeMvError

app = typer.Typer(
    name="acme-mv",
    help=(
        "Fresh logistics reports over millions of orders, without analytical queries on the "
        "transactional database: COPY or WAL change capture into staging, per-batch deltas, "
        "historic + current-day summaries behind union views, exports, mail and a dashboard.\n\n"
        "Example: acme-mv demo"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
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
            help=(
                "Warehouse URL (staging + analytics). Empty: "
                "libpq's PG* variables and service files."
            ),
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
            help=(
                "Time zone whose midnight is the day rollover of the historic views. Default: UTC."
            ),
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, help="Debug logs: SQL timings, per-table figures."
        ),
    ] = 0,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            envvar="ACME_MV_LOG_FORMAT",
            show_envvar=True,
            help="auto (rich on a terminal, else plain), plain "
            "(one line per record, ISO 8601 UTC time), "
            "rich, or json (one object per line).",
        ),
    ] = "auto",
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    common.STATE.verbose = verbose
    common.STATE.debug = debug
    if log_format not in common.LOG_FORMATS:
        raise typer.BadParameter(
            f"{log_format!r} is not one of {', '.join(common.LOG_FORMATS)}",
            param_hint="--log-format",
        )
    common.setup_logging(verbose=verbose, debug=debug, fmt=log_format)
    common.STATE.settings = Settings.from_env(
        database_url=database_url or "", source_url=source_url, timezone=timezone
    )


for module in (
    demo_cmd,
    migrate_cmd,
    sample_cmd,
    sync_cmd,
    reports_cmd,
    run_cmd,
    grants_cmd,
    delivery_cmd,
    cdc_cmd,
):
    module.register(app)


#: the exit code and the line of a command stopped by Ctrl-C
INTERRUPTED_LINE = "Interrupted (Ctrl-C); the transaction in progress was rolled back"


def _commands() -> set[str]:
    return {cmd.name for cmd in app.registered_commands if cmd.name} | {
        group.name for group in app.registered_groups if group.name
    }


def _usage_line(exc: click_exc.UsageError) -> str:
    """typer's usage error on one line, with where to find help."""
    from acme_mv.db import first_line

    ctx = exc.ctx
    where = f"{ctx.command_path} --help" if ctx is not None else "acme-mv --help"
    return f"{first_line(Exception(exc.format_message()))} (see {where})"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and map errors to exit codes."""
    args = common.hoist_global_options(sys.argv[1:] if argv is None else list(argv), _commands())
    debug = "--debug" in args
    common.STATE.log_format = "auto"
    try:
        code = app(args=args, prog_name="acme-mv", standalone_mode=False)
    except click_exc.NoArgsIsHelpError as exc:
        common.out.print(exc.ctx.get_help(), markup=False, highlight=False)
        sys.exit(2)
    except click_exc.UsageError as exc:  # unknown option, bad value, missing argument...
        common.error_line("Error: ", _usage_line(exc))
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        common.error_line("Error: ", INTERRUPTED_LINE)
        sys.exit(INTERRUPTED)
    except AcmeMvError as exc:
        from acme_mv.db import first_line

        if debug:
            common.err.print_exception()
        settings = common.STATE.settings
        common.error_line(
            "Error: ", scrub(first_line(exc), settings.database_url, settings.source_url)
        )
        sys.exit(exc.exit_code)
    except Exception as exc:  # anything else is a bug or an environment fault: still one line
        from acme_mv.db import first_line

        if debug:
            common.err.print_exception()
        settings = common.STATE.settings
        denied = _permission_error(exc)
        if denied is not None:
            common.error_line(
                "Error: ", scrub(first_line(denied), settings.database_url, settings.source_url)
            )
            sys.exit(denied.exit_code)
        msg = scrub(
            f"{type(exc).__name__}: {first_line(exc)}", settings.database_url, settings.source_url
        )
        common.error_line("Unexpected error: ", msg, hint=" (run with --debug for the traceback)")
        sys.exit(1)
    if code == INTERRUPTED:  # typer turns Ctrl-C into this exit code, silently
        common.error_line("Error: ", INTERRUPTED_LINE)
    if isinstance(code, int) and code:
        sys.exit(code)


def _permission_error(exc: BaseException) -> AcmeMvError | None:
    """A permission error that reached the CLI unwrapped (Alembic wraps it in SQLAlchemy's)."""
    import psycopg

    from acme_mv.db import permission_denied

    seen: BaseException | None = exc
    while seen is not None:
        orig = getattr(seen, "orig", None)
        for candidate in (seen, orig):
            if isinstance(candidate, psycopg.errors.InsufficientPrivilege):
                url = common.STATE.settings.database_url
                try:
                    user = psycopg.conninfo.conninfo_to_dict(url).get("user")
                except psycopg.ProgrammingError:
                    user = None
                return permission_denied(
                    candidate, role="warehouse", url=url, user=str(user) if user else None
                )
        seen = seen.__cause__ or seen.__context__
    return None
