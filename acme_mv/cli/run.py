"""``acme-mv run``: the loop (cursor cycles or
``--cdc``), a thin skin over :mod:`acme_mv.run.loop`."""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Annotated

import typer

from acme_mv.cli import common
from acme_mv.cli.delivery import daily_mail_hook
from acme_mv.defaults import DEFAULT_BATCH_MS, DEFAULT_BATCH_ROWS, DEFAULT_SLOT
from acme_mv.errors import BadArgument

log = logging.getLogger("acme_mv.cli")


def run(
    ctx: typer.Context,
    interval: Annotated[
        str | None,
        typer.Option(
            "--interval",
            help="Without --cdc: time between cycle starts: 10s, 500ms, 1m30s, 2h (default 10s).",
            show_default=False,
        ),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Run one good cycle and exit.")] = False,
    mail_at: Annotated[
        str | None,
        typer.Option(
            "--mail-at",
            envvar="ACME_MV_MAIL_AT",
            help="Mail the reports daily after HH:MM (--timezone).",
            show_default=False,
        ),
    ] = None,
    mail_to: Annotated[
        list[str] | None,
        typer.Option(
            "--mail-to",
            envvar="ACME_MV_MAIL_TO",
            help="Recipients of the daily mail: ADDR[,ADDR].",
            show_default=False,
        ),
    ] = None,
    cdc: Annotated[
        bool,
        typer.Option(
            "--cdc",
            help=(
                "Stream changes from the source's WAL (after "
                "`acme-mv cdc setup`) instead of cursor syncs."
            ),
        ),
    ] = False,
    slot: Annotated[
        str | None,
        typer.Option(
            "--slot",
            envvar="ACME_MV_CDC_SLOT",
            show_envvar=True,
            help=f"With --cdc: the replication slot to stream from (default {DEFAULT_SLOT}).",
            show_default=False,
        ),
    ] = None,
    batch_rows: Annotated[
        int | None,
        typer.Option(
            "--batch-rows",
            min=1,
            help=f"With --cdc: close a batch at this many changes (default {DEFAULT_BATCH_ROWS}).",
            show_default=False,
        ),
    ] = None,
    batch_ms: Annotated[
        float | None,
        typer.Option(
            "--batch-ms",
            min=0,
            help=(
                "With --cdc: close a batch this long after its first transaction "
                f"(default {DEFAULT_BATCH_MS:g}; a backlog's batches fill to --batch-rows)."
            ),
            show_default=False,
        ),
    ] = None,
    refresh_ms: Annotated[
        float | None,
        typer.Option(
            "--refresh-ms",
            min=0,
            help="With --cdc: refresh the views at most this often (default 0: after each batch).",
            show_default=False,
        ),
    ] = None,
    keep_history: Annotated[
        str,
        typer.Option(
            "--keep-history",
            help=(
                "After each day's fold, drop history older "
                "than this (acme-mv compact): 35d, 12h or all."
            ),
        ),
    ] = "35d",
    max_failures: Annotated[
        int | None,
        typer.Option(
            "--max-failures",
            help=(
                "Exit with the error after this many failed "
                "cycles in a row. Default: retry forever."
            ),
            show_default=False,
        ),
    ] = None,
    max_backoff: Annotated[
        str,
        typer.Option(
            "--max-backoff", help="Longest wait between retries (1s, doubling, up to this)."
        ),
    ] = "60s",
    full_every: Annotated[
        str | None,
        typer.Option(
            "--full-every",
            help=(
                "Re-copy orders/order_items from scratch (sync "
                "--full) when the last full copy is older: 1d, 12h."
            ),
            show_default=False,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve Prometheus metrics on this port (/metrics).",
            show_default=False,
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="Address the metrics server listens on.")
    ] = "127.0.0.1",
) -> None:
    """Sync then refresh, every --interval, until Ctrl-C
    or SIGTERM (a step in progress finishes first).

    One log line per cycle (rows synced, refresh seconds, freshness), one per failed cycle naming
    the server (warehouse or source). Failed cycles are retried with backoff, forever by default;
    only what retrying cannot fix (not migrated, schema drift, bad configuration, refused login,
    missing privilege) ends the loop. See docs/operate.md.

    Examples:

      acme-mv run --interval 10s

      acme-mv run --once

      acme-mv run --metrics-port 9187 --full-every 1d

      acme-mv run --mail-at 07:00 --mail-to lead@example.com

      acme-mv run --cdc --metrics-port 9187

      acme-mv run --cdc --batch-ms 50 --refresh-ms 500

      acme-mv run --cdc --mail-at 07:00 --mail-to lead@example.com
    """
    from acme_mv.run import loop as runner
    from acme_mv.staging import compact as compact_api

    _check_mode(
        cdc,
        {"--interval": interval, "--once": once or None, "--full-every": full_every},
        {
            # from the environment it may be meant for `acme-mv cdc`: only the option counts
            "--slot": slot if _given(ctx, "slot") else None,
            "--batch-rows": batch_rows,
            "--batch-ms": batch_ms,
            "--refresh-ms": refresh_ms,
        },
    )
    mail = daily_mail_hook(mail_at, mail_to)  # see `acme-mv mail --help` for the SMTP settings
    keep = compact_api.parse_keep(keep_history)
    every = common.duration_option(interval or DEFAULT_INTERVAL, "--interval")
    common.int_in_range(max_failures, "--max-failures", 1, 2**31)
    common.int_in_range(metrics_port, "--metrics-port", 0, 65535)
    policy = runner.RetryPolicy(
        max_s=common.duration_option(max_backoff, "--max-backoff"), max_failures=max_failures
    )
    full = None if full_every is None else common.duration_option(full_every, "--full-every")
    settings = common.settings()
    hook = runner.chain(mail, runner.compaction_hook(settings, keep))
    with contextlib.ExitStack() as stack:
        metrics = None
        if metrics_port is not None:
            from acme_mv.run import metrics as metrics_api

            metrics = metrics_api.Metrics()
            port = stack.enter_context(
                metrics_api.serve(metrics, port=metrics_port, host=metrics_host)
            )
            log.info("serving Prometheus metrics on http://%s:%d/metrics", metrics_host, port)
        if cdc:
            runner.run_cdc(
                settings,
                slot=slot or DEFAULT_SLOT,
                retry=policy,
                metrics=metrics,
                keep=keep,
                batch_rows=batch_rows,
                batch_ms=batch_ms,
                refresh_ms=refresh_ms,
                scheduled=None if mail is None else functools.partial(mail, None),
            )
        else:
            runner.run(
                settings,
                interval=every,
                once=once,
                retry=policy,
                full_every=full,
                metrics=metrics,
                on_cycle=hook,
            )


#: ``--interval`` when not given
DEFAULT_INTERVAL = "10s"


def _check_mode(cdc: bool, cycles: dict[str, object], stream: dict[str, object]) -> None:
    """A usage error for an option given that the chosen mode does not use: the cycles'
    options with ``--cdc``, the stream's without it (never silently ignored)."""
    given = [name for name, value in (cycles if cdc else stream).items() if value is not None]
    if not given:
        return
    if cdc:
        raise BadArgument(
            f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to --cdc, "
            "which streams continuously: drop "
            f"{'it' if len(given) == 1 else 'them'}"
        )
    raise BadArgument(
        f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'} with --cdc: "
        "add --cdc or drop "
        f"{'it' if len(given) == 1 else 'them'}"
    )


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the option was given on the command line (not from its environment variable)."""
    return getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("run")(run)
