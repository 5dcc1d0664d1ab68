"""``acme-mv cdc``: change data capture from the source's WAL (setup, run, status, resync,
drop)."""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from acme_mv import defaults
from acme_mv.cli import common
from acme_mv.errors import BadArgument

if TYPE_CHECKING:
    from acme_mv.reports.refresh import RefreshResult

log = logging.getLogger("acme_mv.cli.cdc")

app = typer.Typer(
    help="Change data capture: feed staging from the source's WAL (a logical replication slot).\n\n"
    "Example: acme-mv cdc setup && acme-mv cdc run",
    no_args_is_help=True,
)

SlotOption = Annotated[
    str,
    typer.Option(
        "--slot",
        envvar="ACME_MV_CDC_SLOT",
        show_envvar=True,
        help="Replication slot name on the source.",
    ),
]
PublicationOption = Annotated[
    str,
    typer.Option(
        "--publication",
        envvar="ACME_MV_CDC_PUBLICATION",
        show_envvar=True,
        help="Publication name on the source.",
    ),
]


@app.command("setup")
def setup(
    slot: SlotOption = defaults.DEFAULT_SLOT,
    publication: PublicationOption = defaults.DEFAULT_PUBLICATION,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            help="Sessions for the initial copy of orders and order_items into empty staging "
            "(block ranges in the slot's snapshot, indexes built in parallel); 1: serial.",
        ),
    ] = defaults.DEFAULT_JOBS,
    failover: Annotated[
        bool,
        typer.Option(
            "--failover",
            help="Create a failover slot (PostgreSQL 17+), kept on standbys that sync "
            "replication slots; makes an existing slot one.",
        ),
    ] = False,
) -> None:
    """Create the publication and the slot, and copy the four tables in the slot's snapshot.

    The copy and the slot's position are committed in one warehouse batch, so the
    stream starts exactly where the copy ends. Running it again is a no-op. Warns
    when the source's max_slot_wal_keep_size is -1 (unlimited).

    Example:

      acme-mv cdc setup

      acme-mv cdc setup --jobs 4 --failover
    """
    from acme_mv import cdc as api

    result = api.setup(
        common.settings(), slot=slot, publication=publication, jobs=jobs, failover=failover
    )
    if not result.created:
        common.err.print(
            "Change capture is already set up: slot "
            f"{result.slot} (publication {result.publication}, "
            f"position {result.consistent_lsn}); nothing to do. To "
            "start over: acme-mv cdc drop, then acme-mv cdc setup",
            highlight=False,
        )
        return
    rows = ", ".join(f"{t} {n:,}" for t, n in result.rows.items())
    log.info(
        "slot %s created at %s; initial copy (batch %s): %s rows in %.2f s",
        result.slot,
        result.consistent_lsn,
        result.batch_id,
        rows,
        result.seconds,
    )


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop``: the batch in progress commits, then the stream ends."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("stopping after the batch in progress")
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


#: shortest --heartbeat (the bound the option always
#: had): each one saves a position in the warehouse
MIN_HEARTBEAT_S = 0.1


@app.command("run")
def run(
    slot: SlotOption = defaults.DEFAULT_SLOT,
    batch_rows: Annotated[
        int, typer.Option("--batch-rows", min=1, help="Close a batch at this many changes.")
    ] = (defaults.DEFAULT_BATCH_ROWS),
    batch_ms: Annotated[
        float,
        typer.Option(
            "--batch-ms",
            min=0,
            help="Close a batch this long after its first transaction (a backlog's batches "
            "fill to --batch-rows).",
        ),
    ] = defaults.DEFAULT_BATCH_MS,
    refresh_ms: Annotated[
        float,
        typer.Option(
            "--refresh-ms",
            min=0,
            help=(
                "Refresh the views at most this often (0: as soon as "
                "a batch commits; refreshes run beside the stream)."
            ),
        ),
    ] = 0.0,
    no_refresh: Annotated[
        bool, typer.Option("--no-refresh", help="Apply batches only; do not refresh the views.")
    ] = False,
    heartbeat: Annotated[
        str,
        typer.Option(
            "--heartbeat",
            help=(
                "Time between heartbeats while the source is idle: "
                f"10s, plain seconds; at least {MIN_HEARTBEAT_S:g}s."
            ),
        ),
    ] = f"{defaults.DEFAULT_HEARTBEAT_S:g}s",
) -> None:
    """Stream changes from the slot into staging in small batches, refreshing the views.

    Each batch is one warehouse transaction (rows + the source position); the
    position is confirmed to the source only after it commits. SIGINT/SIGTERM
    finish the batch in progress and exit 0.

    Example:

      acme-mv cdc run --batch-ms 100
    """
    from acme_mv import cdc as api

    heartbeat_s = common.duration_option(heartbeat, "--heartbeat")
    if heartbeat_s < MIN_HEARTBEAT_S:
        raise BadArgument(f"--heartbeat must be at least {MIN_HEARTBEAT_S:g}s, not {heartbeat!r}")
    stop = threading.Event()

    def on_batch(result: api.BatchResult) -> None:
        w = result.written
        log.info(
            "batch %d: %d transactions, %d changes -> %d versions, "
            "%d tombstones, %d mirror rows, %d mirror deletes; "
            "position %s",
            result.batch_id,
            result.transactions,
            result.changes,
            w.versions,
            w.tombstones,
            w.mirror_rows,
            w.mirror_deleted,
            result.lsn,
        )

    def on_refresh(result: RefreshResult) -> None:
        log.info(
            "refreshed up to batch %s in %.2f s", result.refreshed_batch_id, result.total_seconds
        )

    with _stop_on_signals(stop):
        totals = api.stream(
            common.settings(),
            slot=slot,
            batch_rows=batch_rows,
            batch_ms=batch_ms,
            refresh_views=not no_refresh,
            refresh_ms=refresh_ms,
            heartbeat_s=heartbeat_s,
            stop=stop,
            on_batch=on_batch,
            on_refresh=on_refresh,
        )
    log.info(
        "stopped: %d batches, %d transactions, %d changes, position %s",
        totals.batches,
        totals.transactions,
        totals.changes,
        totals.lsn,
    )


MaxRetainedOption = Annotated[
    str,
    typer.Option(
        "--max-retained",
        help="Exit 5 when the slot retains more source WAL than this (10GB, 512MB).",
    ),
]
DEFAULT_MAX_RETAINED_TEXT = f"{defaults.DEFAULT_MAX_RETAINED // 1024**3}GB"


def _bytes(n: int | None) -> str:
    return "-" if n is None else f"{n:,} B"


@app.command("status")
def status(
    slot: SlotOption = defaults.DEFAULT_SLOT,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    max_retained: MaxRetainedOption = DEFAULT_MAX_RETAINED_TEXT,
) -> None:
    """Show the slot's lag (bytes, seconds), the WAL it retains, its positions and wal_status.

    Exits 5 when the slot is invalidated or about to be (wal_status lost or unreserved) or
    retains more than --max-retained; the message names the command that recovers.

    Example:

      acme-mv cdc status --json --max-retained 20GB
    """
    from acme_mv import cdc as api

    limit = common.size_option(max_retained, "--max-retained")
    st = api.status(common.settings(), slot=slot)
    if as_json:
        common.out.print_json(json.dumps(st.as_json()))
        api.check_health(st, max_retained=limit)
        return
    from rich.table import Table

    table = Table(title=f"acme-mv cdc status: slot {st.slot}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    rows = [
        ("slot exists", "yes" if st.exists else "no"),
        ("wal_status", st.wal_status or "-"),
        ("streaming (pid)", str(st.active_pid) if st.active_pid else "no"),
        ("lag", _bytes(st.lag_bytes)),
        ("lag seconds", "-" if st.lag_s is None else f"{st.lag_s:.1f}"),
        ("WAL retained", _bytes(st.retained_bytes)),
        ("confirmed LSN", st.confirmed_flush_lsn or "-"),
        ("warehouse LSN", st.saved_lsn or "-"),
        ("source LSN", st.current_lsn),
        ("last batch", "-" if st.last_batch_id is None else str(st.last_batch_id)),
    ]
    for what, value in rows:
        table.add_row(what, value)
    common.out.print(table)
    api.check_health(st, max_retained=limit)


@app.command("resync")
def resync(
    table: Annotated[
        str,
        typer.Option(
            "--table",
            help="The source table to re-copy (customers, products, orders, order_items).",
        ),
    ],
    slot: SlotOption = defaults.DEFAULT_SLOT,
) -> None:
    """Re-copy one table in a new snapshot; the slot keeps its position.

    After change capture stopped on a table (an update without REPLICA IDENTITY FULL, a
    column's type changed) and the source is fixed: the table is compared with staging in
    the snapshot (changed rows appended, vanished keys tombstoned), and the stream skips
    the table's changes that committed before the snapshot, the stopping one among them.

    Example:

      acme-mv cdc resync --table orders && acme-mv cdc run
    """
    from acme_mv import cdc as api

    result = api.resync(common.settings(), table=table, slot=slot)
    log.info(
        "%s re-copied in batch %d (%d rows read, %d new or changed, %d removed) in %.2f s; "
        "the stream skips its changes committed before %s",
        result.table,
        result.batch_id,
        result.rows_read,
        result.rows_new,
        result.rows_deleted,
        result.seconds,
        result.lsn,
    )


@app.command("drop")
def drop(
    slot: SlotOption = defaults.DEFAULT_SLOT,
    publication: Annotated[
        str | None,
        typer.Option(
            "--publication", help="Publication to drop. Default: the one set up with the slot."
        ),
    ] = None,
) -> None:
    """Drop the slot and the publication on the source, and the warehouse's position.

    Staging is kept; acme-mv cdc setup afterwards re-snapshots into it
    (changed rows become new versions, vanished keys tombstones).

    Example:

      acme-mv cdc drop && acme-mv cdc setup
    """
    from acme_mv import cdc as api

    result = api.drop(common.settings(), slot=slot, publication=publication)
    log.info(
        "slot %s: %s; publication: %s; warehouse position: %s",
        slot,
        "dropped" if result.slot_dropped else "not found",
        "dropped"
        if result.publication_dropped
        else ("kept (owned by another role)" if result.publication_kept else "not found"),
        "deleted" if result.position_deleted else "none",
    )


def register(root: typer.Typer) -> None:
    """Add the ``cdc`` command group."""
    root.add_typer(app, name="cdc")
