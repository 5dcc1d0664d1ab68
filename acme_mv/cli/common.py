"""What every command shares: settings from the global options, consoles, logging, argv order."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import typer

from acme_mv.config import Settings, parse_duration, parse_size
from acme_mv.errors import BadArgument

if TYPE_CHECKING:
    from rich.console import Console

#: data goes to stdout, everything else (logs, progress, errors) to stderr; rich's consoles
#: are made on first use (module ``__getattr__``): importing rich is a third of ``--help``
out: Console
err: Console


def __getattr__(name: str) -> Console:
    if name not in ("out", "err"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    console = Console(soft_wrap=True) if name == "out" else Console(stderr=True)
    globals()[name] = console
    return console


def _err() -> Console:
    """``err`` from inside this module (a module's own code does not call its ``__getattr__``)."""
    console: Console = globals().get("err") or __getattr__("err")
    return console


LogFormat = Literal["auto", "plain", "rich", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "plain", "rich", "json")


@dataclass
class State:
    settings: Settings = field(default_factory=Settings)
    verbose: int = 0
    debug: bool = False
    #: the format actually in use ("auto" resolved), once logging is set up
    log_format: LogFormat = "auto"


STATE = State()


def settings(ctx: typer.Context | None = None) -> Settings:
    """The settings resolved by the top-level callback."""
    return STATE.settings


def duration_option(text: str, option: str) -> float:
    """A duration option's value in seconds (the one parser), or a usage error naming the option."""
    try:
        return parse_duration(text)
    except BadArgument as exc:
        raise BadArgument(f"{option}: {exc}") from None


def size_option(text: str, option: str) -> int:
    """A size option's value in bytes, or a usage error naming the option."""
    try:
        return parse_size(text)
    except BadArgument as exc:
        raise BadArgument(f"{option}: {exc}") from None


def int_in_range(value: int | None, option: str, low: int, high: int) -> None:
    """A usage error naming the option when ``value`` is outside ``low..high``."""
    if value is not None and not low <= value <= high:
        raise BadArgument(f"{option} must be between {low} and {high}, not {value}")


def iso_time(created: float) -> str:
    """``2026-11-26T09:12:03.123Z``: ISO 8601, UTC, milliseconds."""
    return (
        datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class PlainFormatter(logging.Formatter):
    """One line per record: ``2026-11-26T09:12:03.123Z INFO acme_mv.run.loop cycle 3: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{iso_time(record.created)} {record.levelname} "
            f"{record.name} {_one_line(record.getMessage())}"
        )
        if record.exc_info and STATE.debug:
            line += " | " + _one_line(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line (for log shippers): ts, level, logger, message, and extras."""

    #: record attributes that are not extras
    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                doc[key] = (
                    value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
                )
        if record.exc_info and STATE.debug:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def resolve_format(fmt: LogFormat) -> LogFormat:
    """``auto``: rich on a terminal, plain lines otherwise (docker logs, journald, pipes)."""
    if fmt != "auto":
        return fmt
    made = globals().get("err")  # a console already made (or a test's): ask it
    if made is not None:
        return "rich" if made.is_terminal else "plain"
    return "rich" if sys.stderr.isatty() else "plain"


def setup_logging(*, verbose: int, debug: bool, fmt: LogFormat = "auto") -> None:
    level = logging.DEBUG if (verbose or debug) else logging.INFO
    chosen = resolve_format(fmt)
    STATE.log_format = chosen
    handler: logging.Handler
    if chosen == "rich":
        from rich.logging import RichHandler

        handler = RichHandler(
            console=_err(),
            show_time=True,
            show_path=debug,
            rich_tracebacks=debug,
            markup=False,
            log_time_format="%Y-%m-%d %H:%M:%S",
        )
    else:
        made = globals().get("err")
        handler = logging.StreamHandler(made.file if made is not None else sys.stderr)
        handler.setFormatter(JsonFormatter() if chosen == "json" else PlainFormatter())
    root = logging.getLogger("acme_mv")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # libraries log through the same handler (else Python's last-resort handler
    # writes bare lines); psycopg's "error ignored in rollback" warnings repeat
    # the failure acme-mv already reports, so they show only with -v
    for name, quiet in (("alembic", logging.WARNING), ("psycopg", logging.ERROR)):
        lib = logging.getLogger(name)
        lib.handlers[:] = [handler]
        lib.setLevel(level if (verbose or debug) else quiet)
        lib.propagate = False


def error_line(prefix: str, message: str, *, hint: str = "") -> None:
    """The one line of a failed command: ``Error: ...`` (red on a terminal, never wrapped), or a
    JSON record with ``--log-format json`` so that a log shipper sees it too."""
    if STATE.log_format == "json":
        logging.getLogger("acme_mv.cli").error("%s%s%s", prefix, message, hint)
        return
    from rich.text import Text

    _err().print(
        Text.assemble((prefix, "bold red"), message, hint), highlight=False, soft_wrap=True
    )


#: global options that take a value, and flags; accepted before or after the command
GLOBAL_VALUED = ("--database-url", "--source-url", "--timezone", "--log-format")
GLOBAL_FLAGS = ("--debug", "--verbose")


def _is_global(arg: str) -> tuple[bool, bool]:
    """(is a global option, takes the next argument as its value)."""
    name = arg.split("=", 1)[0]
    if name in GLOBAL_VALUED:
        return True, "=" not in arg
    if name in GLOBAL_FLAGS or (arg.startswith("-v") and set(arg[1:]) == {"v"}):
        return True, False
    return False, False


def hoist_global_options(args: list[str], commands: set[str]) -> list[str]:
    """Move global options written after the command before it.

    ``acme-mv sync --database-url X -v`` becomes ``acme-mv --database-url X -v sync``.
    Everything after ``--`` stays where it is.
    """
    front: list[str] = []
    i = 0
    while i < len(args) and args[i] not in commands:
        valued = _is_global(args[i])[1]
        front.append(args[i])
        if valued and i + 1 < len(args):
            front.append(args[i + 1])
            i += 1
        i += 1
    if i >= len(args):
        return args
    hoisted: list[str] = []
    rest: list[str] = []
    j = i
    while j < len(args):
        arg = args[j]
        if arg == "--":
            rest.extend(args[j:])
            break
        is_global, valued = _is_global(arg)
        if is_global:
            hoisted.append(arg)
            if valued and j + 1 < len(args):
                hoisted.append(args[j + 1])
                j += 1
        else:
            rest.append(arg)
        j += 1
    return front + hoisted + rest
