"""``acme-mv cdc resync --table T``: re-copy one table in a new snapshot while the slot keeps
its position, so that the stream can go on after the operator fixed what stopped it (REPLICA
IDENTITY, a column's type) without a re-snapshot of the four tables.

The snapshot and its LSN come from a TEMPORARY logical slot created with an exported
snapshot, as ``cdc setup`` does: a transaction whose commit record starts before its
``consistent_point`` is in the snapshot, every later one is not (the server's own rule). The
table is compared whole with staging in that snapshot (changed rows appended as versions,
vanished keys tombstoned; a mirror reloaded: :func:`acme_mv.staging.copy.load`) as ONE
batch of :func:`acme_mv.staging.batch.open_batch`, which also records the table and the
LSN in ``staging.cdc_state.resync``. The stream then drops that table's changes from
transactions that committed before the LSN (the offending one among them), and applies
the later ones. A stream running meanwhile notices the new entry when it next takes the
sync lock, drops the batch it gathered and streams again from the warehouse's position.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from acme_mv import migrate
from acme_mv.cdc import replication
from acme_mv.cdc.errors import NotSetUp
from acme_mv.cdc.slot import DEFAULT_SLOT, check_slot, create_slot, saved_position
from acme_mv.config import Settings
from acme_mv.db import connection
from acme_mv.errors import BadArgument
from acme_mv.staging import copy, tables
from acme_mv.staging.batch import open_batch
from acme_mv.staging.tables import TABLES

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ResyncResult:
    slot: str
    table: str
    batch_id: int
    #: the snapshot's LSN: the stream drops the table's changes that committed before it
    lsn: str
    rows_read: int
    #: versions appended (a mirror: rows loaded)
    rows_new: int
    #: keys tombstoned (a mirror: rows deleted)
    rows_deleted: int
    seconds: float


def resync(settings: Settings, *, table: str, slot: str = DEFAULT_SLOT) -> ResyncResult:
    """Re-copy ``table`` in a new snapshot and make the stream skip its older changes (see
    the module doc). Raises BadArgument (unknown table), NotSetUp, SlotLost, SchemaDrift (the
    source table still differs from the contract)."""
    spec = TABLES.get(table)
    if spec is None:
        raise BadArgument(f"Unknown table {table!r} for --table; choose from {', '.join(TABLES)}")
    began = time.monotonic()
    with (
        connection(settings.database_url, role="warehouse") as wh,
        connection(settings.effective_source_url, role="source", autocommit=True) as admin,
    ):
        migrate.require_head(wh)
        if saved_position(wh, slot) is None:
            raise NotSetUp(
                f"The warehouse has no change capture position for slot {slot!r}: "
                "run acme-mv cdc setup (it copies every table)",
                slot=slot,
            )
        wh.rollback()
        check_slot(admin, slot)
        tables.check_schema(admin, [spec], warn_unindexed=False)  # fixed at the source?
        identity = admin.execute(
            "SELECT relreplident FROM pg_class WHERE oid = %s::regclass", (spec.qualified,)
        ).fetchone()
        if identity is not None and identity[0] != "f":
            log.warning(
                "%s is not REPLICA IDENTITY FULL: an update that leaves a TOASTed value "
                "unchanged stops change capture again (ALTER TABLE %s REPLICA IDENTITY FULL)",
                spec.qualified,
                spec.qualified,
            )
        repl = replication.connect(settings.effective_source_url)
        try:
            temporary = f"acme_mv_resync_{secrets.token_hex(6)}"
            lsn, snapshot = create_slot(repl, temporary, admin.info.server_version, temporary=True)
            with connection(settings.effective_source_url, role="source") as src:
                src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                src.read_only = True
                src.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
                with open_batch(wh, tables=[spec.name]) as batch:
                    mode = copy.mode_of(wh, spec, full=True)
                    if mode == "full":
                        batch.compared_tables = [spec.name]
                    read, new, deleted = copy.load(
                        src, tables.select_all(spec), wh, spec, mode, lambda _: None
                    )
                    updated = wh.execute(
                        "UPDATE staging.cdc_state SET resync = resync || %s::jsonb, "
                        "updated_at = clock_timestamp() WHERE slot_name = %s",
                        (json.dumps({spec.name: lsn}), slot),
                    ).rowcount
                    if updated != 1:  # dropped meanwhile
                        raise NotSetUp(
                            f"The change capture position for slot {slot!r} went away "
                            "(acme-mv cdc drop?): run acme-mv cdc setup",
                            slot=slot,
                        )
                src.rollback()
            wh.commit()
        except BaseException:
            wh.rollback()
            raise
        finally:
            repl.close()  # drops the temporary slot
    log.info(
        "resync of %s: batch %d, %d rows read, %d new, %d removed; the stream skips its "
        "changes committed before %s",
        spec.name,
        batch.batch_id,
        read,
        new,
        deleted,
        lsn,
    )
    return ResyncResult(
        slot=slot,
        table=spec.name,
        batch_id=batch.batch_id,
        lsn=lsn,
        rows_read=read,
        rows_new=new,
        rows_deleted=deleted,
        seconds=time.monotonic() - began,
    )
