"""``acme-mv sample init|load|simulate``: the ACME sample source, on the source URL."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from acme_mv import defaults
from acme_mv.cli import common
from acme_mv.config import describe_target

if TYPE_CHECKING:
    from acme_mv.sample import load as load_api

log = logging.getLogger("acme_mv.cli")

sample_app = typer.Typer(
    name="sample",
    help=(
        "Create, fill and exercise the ACME sample source.\n\n"
        "Example: acme-mv sample load --orders 10000"
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)


@sample_app.command("init")
def init(
    replace: Annotated[
        bool,
        typer.Option("--replace", help="Drop an existing operations schema (and its rows) first."),
    ] = False,
) -> None:
    """Create the operations schema of the contract (four tables, no rows) on the source.

    Examples:

      acme-mv sample init

      acme-mv sample init --replace
    """
    from acme_mv.db import connection
    from acme_mv.sample import schema

    url = common.settings().effective_source_url
    started = time.monotonic()
    with connection(url, role="source") as conn:
        schema.init(conn, replace=replace)
    log.info(
        "created the operations schema (%s) on %s in %.1f s",
        ", ".join(schema.TABLES),
        describe_target(url),
        time.monotonic() - started,
    )


@sample_app.command("load")
def load(
    orders: Annotated[
        int, typer.Option("--orders", "-n", help="How many orders (about 26 items each).")
    ],
    days: Annotated[
        int, typer.Option("--days", help="Spread the orders over this many past days.")
    ] = 120,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same rows.")] = 0,
    append: Annotated[
        bool, typer.Option("--append", help="Add to the rows already there.")
    ] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Empty the tables first.")] = False,
    if_empty: Annotated[
        bool,
        typer.Option(
            "--if-empty", help="Load only when the tables are empty; else do nothing and exit 0."
        ),
    ] = False,
) -> None:
    """Generate a realistic order history on the source, in one transaction.

    About orders/20 customers and orders/200 products, 20..32 items per order,
    all four statuses and the contract's orphans. Refuses to touch tables that
    hold rows unless told --append or --replace (or --if-empty: then it does
    nothing, for init jobs that run again). Creates the schema if missing.

    Examples:

      acme-mv sample load --orders 10000

      acme-mv sample load --orders 1000000 --days 365 --seed 7 --replace

      acme-mv sample load --orders 5000 --append

      acme-mv sample load --orders 100000 --if-empty
    """
    from acme_mv.db import connection
    from acme_mv.sample import load as load_api

    if sum((append, replace, if_empty)) > 1:
        raise typer.BadParameter("--append, --replace and --if-empty exclude each other")
    mode: load_api.LoadMode = (
        "append" if append else "replace" if replace else "if_empty" if if_empty else "refuse"
    )
    url = common.settings().effective_source_url
    with connection(url, role="source") as conn, _progress("loading") as progress:
        result = load_api.load(
            conn, orders=orders, days=days, seed=seed, mode=mode, progress=progress
        )
    log.info("loaded %s into operations on %s", result.summary(), describe_target(url))


@sample_app.command("simulate")
def simulate(
    rate: Annotated[
        float,
        typer.Option(
            "--rate", "-r", help="Row changes per second, all tables together (max 10000)."
        ),
    ] = defaults.DEFAULT_RATE,
    duration: Annotated[
        str,
        typer.Option(
            "--duration", "-d", help="How long: 30s, 5m, 1m30s or seconds; 0 = until Ctrl-C."
        ),
    ] = "0",
    seed: Annotated[int | None, typer.Option("--seed", help="Seed the random choices.")] = None,
) -> None:
    """Run the source's live workload (orders, items,
    customers, products), one transaction per row change.

    The default rate is about the contract's production volume. Stops after
    --duration or on Ctrl-C, then logs what it changed.

    Examples:

      acme-mv sample simulate --duration 5m

      acme-mv sample simulate --rate 200 --duration 30s --seed 1

      acme-mv sample simulate --rate 50
    """
    from acme_mv.sample import simulate as simulate_api

    limit = common.duration_option(duration, "--duration") or None
    simulate_api.validate_rate(rate)
    url = common.settings().effective_source_url
    stats = simulate_api.simulate(url, rate=rate, duration=limit, seed=seed)
    verb = "stopped by Ctrl-C after" if stats.interrupted else "simulated"
    log.info("%s %s on %s", verb, stats.summary(), describe_target(url))


@contextmanager
def _progress(what: str) -> Iterator[load_api.ProgressCallback | None]:
    """A rich progress bar on stderr when it is a terminal, else nothing."""
    if not common.err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(f"{what} {{task.description}}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=common.err, transient=True) as bar:
        task = bar.add_task("", total=None)

        def update(step: str, done: int, total: int) -> None:
            bar.update(task, description=step, completed=done, total=total)

        yield update


def register(app: typer.Typer) -> None:
    """Add ``acme-mv sample ...``."""
    app.add_typer(sample_app, name="sample")
