"""One batch: the protocol every writer of staging follows, in one place.

A batch is one warehouse transaction, the caller's. :func:`open_batch` takes
the sync lock (waiting or raising :class:`~acme_mv.errors.Busy`), drops what
an interrupted parallel copy left behind, draws the batch id (the default of
every version's ``_batch_id``), makes sure a partition of the version tables
holds it and records the batch. The writer then lands its rows and saves its
own position (the cursor sync its cursors, change capture its LSN) in the
same transaction. Leaving the block applies the batch (its report deltas and
the latest-state tables, :mod:`acme_mv.staging.apply`) and stamps it
finished; the caller's commit makes all of it visible at once, and a failure
anywhere leaves nothing. Every writer goes through here: the cursor sync
(incremental or ``--full``), change capture's stream and its initial copy,
and the parallel first copy (:meth:`Batch.parallel`), so every batch is
applied exactly once.

    with open_batch(wh, tables=["orders"]) as batch:
        copy.load_changes(src, query, wh, spec, on_bytes)   # versions of batch.batch_id
        wh.execute("UPDATE ... position ...")
    wh.commit()
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from acme_mv.db import Conn, one_value
from acme_mv.errors import Busy
from acme_mv.staging import apply, parallel, partitions

log = logging.getLogger(__name__)

#: the moment of the source a batch brings the reports up to (an expression over the
#: ``staging.sync_batches`` row ``b``): a cursor sync reads the source when it starts; a
#: change-capture batch sets ``source_at``, its last transaction's commit time
SOURCE_AT_SQL = "coalesce(b.source_at, b.started_at)"

#: ``pg_advisory_xact_lock`` key of ``acme-mv sync`` on the warehouse: the
#: bytes of "acmesync" read as a signed 64-bit integer. ``acme-mv refresh``
#: uses a different key.
SYNC_LOCK_KEY = int.from_bytes(b"acmesync", "big", signed=True)


def lock(conn: Conn, *, wait: bool) -> None:
    """Take the sync lock for this transaction; wait (saying so) or raise :class:`Busy`."""
    if one_value(conn, "SELECT pg_try_advisory_xact_lock(%s)", (SYNC_LOCK_KEY,), kind=bool):
        return
    if not wait:
        raise Busy(
            f"Another acme-mv sync is running (advisory lock {SYNC_LOCK_KEY} on the warehouse); "
            "try again later or drop --no-wait to wait for it",
            resource=f"advisory lock {SYNC_LOCK_KEY}",
        )
    log.info(
        "another sync is running: waiting for advisory lock %s on the warehouse", SYNC_LOCK_KEY
    )
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (SYNC_LOCK_KEY,))
    log.info("lock acquired")


@dataclass(kw_only=True)
class Batch:
    """An open batch (see the module doc)."""

    conn: Conn
    batch_id: int
    #: the tables the writer compared whole with the source (``sync --full``); saved at the end
    compared_tables: list[str] = field(default_factory=list)
    #: change capture: the commit time of the batch's last source transaction (saved at the
    #: end; None: the batch read the source when it started)
    source_at: dt.datetime | None = None
    #: (orders, order items) a parallel copy loaded into the latest-state tables; None: the
    #: apply fills them
    state_rows: tuple[int, int] | None = None

    @contextlib.contextmanager
    def parallel(self, loader: parallel.Loader | None) -> Iterator[None]:
        """Run the block (the writer's serial copies) while ``loader``'s workers copy, then
        wait for them and put their tables in place in this batch; stop them and drop their
        tables when anything fails. None: the block alone."""
        if loader is None:
            yield
            return
        try:
            yield
            waited = time.monotonic()
            loader.wait()
            attached = time.monotonic()
            loader.attach(self.conn)
        except BaseException:
            loader.abort()
            raise
        self.state_rows = loader.state_rows
        log.debug(
            "parallel load: waited %.2f s for the workers, attached in %.2f s",
            attached - waited,
            time.monotonic() - attached,
        )


@contextlib.contextmanager
def open_batch(conn: Conn, *, tables: list[str], wait: bool = True) -> Iterator[Batch]:
    """Open a batch of ``tables`` in ``conn``'s transaction; apply and close it when the block
    ends without an error (see the module doc). The caller commits.

    Raises :class:`~acme_mv.errors.Busy` when ``wait`` is False and another writer holds the
    sync lock.
    """
    lock(conn, wait=wait)
    partitions.drop_debris(conn)
    batch = Batch(conn=conn, batch_id=_begin(conn, tables=tables))
    yield batch
    applying = time.monotonic()
    apply.apply_batch(conn, batch.batch_id, state_rows=batch.state_rows)
    conn.execute(
        "UPDATE staging.sync_batches SET finished_at = clock_timestamp(), compared_tables = %s, "
        "source_at = %s WHERE batch_id = %s",
        (batch.compared_tables, batch.source_at, batch.batch_id),
    )
    log.debug("batch %s applied in %.2f s", batch.batch_id, time.monotonic() - applying)


_DRAW_BATCH_ID = (
    "SELECT set_config('acme_mv.batch_id', nextval('staging.sync_batch_id_seq')::text, true)"
)


def _begin(conn: Conn, *, tables: list[str]) -> int:
    """Draw the batch id (after the lock), make it the default of ``_batch_id``, make sure
    a partition of the version tables holds it, and record the batch."""
    # one statement: the id, set as the default of _batch_id (for this transaction)
    batch_id = int(one_value(conn, _DRAW_BATCH_ID, kind=str))
    partitions.ensure(conn, batch_id)
    conn.execute(
        "INSERT INTO staging.sync_batches (batch_id, tables) VALUES (%s, %s)", (batch_id, tables)
    )
    return batch_id
