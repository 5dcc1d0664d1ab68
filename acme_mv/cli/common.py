"""What every command shares: settings from the global options, consoles, logging."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import typer
from rich.console import Console
from rich.logging import RichHandler

from acme_mv.config import Settings

#: data goes to stdout, everything else (logs, progress, errors) to stderr
out = Console(soft_wrap=True)
err = Console(stderr=True)


@dataclass
class State:
    settings: Settings = field(default_factory=Settings)
    verbose: int = 0
    debug: bool = False


STATE = State()


def settings(ctx: typer.Context | None = None) -> Settings:
    """The settings resolved by the top-level callback."""
    return STATE.settings


def setup_logging(*, verbose: int, debug: bool) -> None:
    level = logging.DEBUG if (verbose or debug) else logging.INFO
    handler = RichHandler(
        console=err,
        show_time=True,
        show_path=debug,
        rich_tracebacks=debug,
        markup=False,
        log_time_format="%H:%M:%S",
    )
    root = logging.getLogger("acme_mv")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if not debug:
        logging.getLogger("alembic").setLevel(logging.WARNING)
