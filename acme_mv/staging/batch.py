"""The warehouse side of a sync's bookkeeping: lock, batch, cursors.

Everything here runs inside the sync's one warehouse transaction, so a batch
row, the staged rows and the new cursors become visible together or not at all.
"""

from __future__ import annotations

import logging

from acme_mv.db import Conn, one_value
from acme_mv.errors import Busy
from acme_mv.staging import apply, partitions

log = logging.getLogger(__name__)

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


def begin_batch(
    conn: Conn,
    *,
    tables: list[str],
    full_tables: list[str],
    compared_tables: list[str] | None = None,
) -> int:
    """Draw the batch id (after the lock), make it the default of ``_batch_id`` and make sure
    a partition of the version tables holds it."""
    batch_id = one_value(conn, "SELECT nextval('staging.sync_batch_id_seq')", kind=int)
    conn.execute("SELECT set_config('acme_mv.batch_id', %s, true)", (str(batch_id),))
    partitions.ensure(conn, batch_id)
    conn.execute(
        "INSERT INTO staging.sync_batches (batch_id, tables, full_tables, compared_tables) "
        "VALUES (%s, %s, %s, %s)",
        (batch_id, tables, full_tables, compared_tables or []),
    )
    return batch_id


def finish_batch(conn: Conn, batch_id: int, *, state_rows: tuple[int, int] | None = None) -> None:
    """Close the batch: apply it (its report deltas and the latest-state tables, see
    :mod:`acme_mv.staging.apply`) and stamp it finished, in the batch's transaction.

    Every writer of batches ends with this call, so every batch is applied exactly once.
    ``state_rows``: a parallel first copy loaded the state tables (see
    :attr:`acme_mv.staging.parallel.Loader.state_rows`).
    """
    apply.apply_batch(conn, batch_id, state_rows=state_rows)
    conn.execute(
        "UPDATE staging.sync_batches SET finished_at = clock_timestamp() WHERE batch_id = %s",
        (batch_id,),
    )
