"""``acme-mv cdc run``: stream the slot, apply small batches, refresh, confirm.

One batch = whole source transactions = ONE warehouse transaction: the sync
lock, a batch id, the rows (versions, tombstones, mirror rows) and the new
position in ``staging.cdc_state``. Only after that commit is the position
confirmed to the source (``flush_lsn``), so a crash at any point loses
nothing: the slot re-sends from its confirmed position, which is at or
before the warehouse's, and every transaction that ends at or before the
warehouse's position is skipped, so nothing is doubled.

A batch closes when no message is waiting (the stream caught up), or at
``batch_rows`` changes, or ``batch_ms`` after its first transaction. While the stream reads a
backlog (transactions before the source's WAL position read when the session began, or when a
batch was last due by time), neither ``batch_ms`` nor a pause of up to ``batch_ms`` in the flow
closes a batch: it fills to ``batch_rows`` (fewer, larger warehouse transactions catch up
sooner). The
views are refreshed after batches, in a thread of their own (at most every
``refresh_ms``; :mod:`acme_mv.cdc.refresher`), so the stream never waits for a
refresh; when the stream stops, a last refresh covers every batch. When it
starts and at each heartbeat, a batch it did not write (``cdc setup``'s initial
copy or re-snapshot) that no refresh included yet is refreshed in as well.

Heartbeats: while idle (no open transaction, nothing unapplied) the streamer
asks the server for a keepalive every ``heartbeat_s``; its WAL position is
then saved in the warehouse (``caught_up_at``) and confirmed, so an idle
source does not keep WAL for the slot and ``cdc status`` shows a fresh lag.

A lost replication connection (a source restart, ``pg_terminate_backend``
of the walsender) drops what was not applied and reconnects from the
warehouse's position, up to ``reconnects`` times in a row.

A transaction larger than ``batch_rows`` is spilled to the warehouse session's TEMP
tables in chunks of ``batch_rows`` (:class:`acme_mv.cdc.write.Spill`) and applied at its
commit as a batch of its own, so the changes held in memory stay about ``batch_rows``.
A table re-copied by ``cdc resync`` loses its changes from transactions committed before
the copy's snapshot (:mod:`acme_mv.cdc.resync`).
"""

from __future__ import annotations

import datetime as dt
import logging
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import class_row

from acme_mv import revision
from acme_mv.backoff import backoff_s
from acme_mv.cdc import pgoutput, replication
from acme_mv.cdc.decode import Decoder
from acme_mv.cdc.errors import CdcError, NotSetUp
from acme_mv.cdc.refresher import Refresher
from acme_mv.cdc.slot import DEFAULT_SLOT, check_slot, saved_position, slot_holder
from acme_mv.cdc.write import Batch, Spill, Written, write
from acme_mv.config import Settings
from acme_mv.db import (
    Conn,
    UnexpectedResult,
    connection,
    first_line,
    is_data_error,
    one_value,
    optional_value,
)
from acme_mv.defaults import DEFAULT_BATCH_MS as DEFAULT_BATCH_MS
from acme_mv.defaults import DEFAULT_BATCH_ROWS as DEFAULT_BATCH_ROWS
from acme_mv.defaults import DEFAULT_HEARTBEAT_S as DEFAULT_HEARTBEAT_S
from acme_mv.errors import ConnectionFailed, ConnectionLost
from acme_mv.reports.refresh import RefreshResult, behind
from acme_mv.staging.batch import open_batch

log = logging.getLogger(__name__)

#: consecutive lost replication connections before giving up
DEFAULT_RECONNECTS = 5
#: pause before reconnecting (a restarting source needs a moment)
RECONNECT_PAUSE_S = 1.0
#: a slot another process streams from (a second streamer, or a killed streamer's walsender
#: that has not noticed yet: at its next read, or wal_sender_timeout) is tried again after
#: this long, doubling up to SLOT_BUSY_MAX_S, for as long as it stays busy
SLOT_BUSY_FIRST_S = 1.0
SLOT_BUSY_MAX_S = 60.0
#: while the slot stays busy, one log line (naming the process holding it) this often
SLOT_BUSY_LOG_EVERY_S = 60.0
#: SQLSTATE object_in_use: "replication slot ... is active for PID ..."
OBJECT_IN_USE = "55006"


@dataclass(frozen=True, kw_only=True)
class BatchResult:
    """One applied batch, as ``on_batch`` receives it."""

    batch_id: int
    transactions: int
    changes: int
    written: Written
    #: end LSN of its newest transaction: saved, then confirmed
    lsn: str
    #: source commit time of its oldest and newest transaction
    first_commit_at: dt.datetime | None
    last_commit_at: dt.datetime | None
    #: this machine's clock when the warehouse committed
    committed_at: dt.datetime
    apply_seconds: float


@dataclass(frozen=True, kw_only=True)
class SlotLag:
    """The slot on the source, as ``on_slot`` receives it (at the start of each replication
    session, then at most every heartbeat interval)."""

    #: pg_current_wal_lsn() - restart_lsn: WAL the slot keeps from being removed
    retained_bytes: int | None
    #: pg_current_wal_lsn() - confirmed_flush_lsn
    lag_bytes: int | None
    wal_status: str | None


_SLOT_LAG_SQL = """
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag_bytes,
       wal_status
FROM pg_replication_slots WHERE slot_name = %s
"""


@dataclass(frozen=True, kw_only=True)
class StreamResult:
    batches: int
    transactions: int
    changes: int
    skipped_transactions: int
    heartbeats: int
    reconnects: int
    lsn: str
    #: changes of a re-copied table (``cdc resync``) from before its copy's snapshot, dropped
    resync_skipped_changes: int = 0
    #: the most decoded changes held in memory at once: about ``batch_rows`` at most, however
    #: large a transaction (its changes beyond that are spilled to the warehouse)
    max_buffered_changes: int = 0
    #: chunks of ``batch_rows`` changes spilled by transactions larger than a batch
    spilled_chunks: int = 0


def stream(
    settings: Settings,
    *,
    slot: str = DEFAULT_SLOT,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_ms: float = DEFAULT_BATCH_MS,
    refresh_views: bool = True,
    refresh_ms: float = 0.0,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    reconnects: int = DEFAULT_RECONNECTS,
    stop: threading.Event | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
    on_refresh: Callable[[RefreshResult], None] | None = None,
    on_slot: Callable[[SlotLag], None] | None = None,
    on_heartbeat: Callable[[], None] | None = None,
) -> StreamResult:
    """Stream until ``stop`` is set; see the module doc. Returns totals.

    ``on_slot`` receives the slot's retained WAL and lag at the start of each replication
    session and then at most every ``heartbeat_s``; ``on_heartbeat`` is called after each
    heartbeat saved and confirmed (the stream works, though no change arrived).

    Raises NotSetUp (no ``cdc setup`` for ``slot``), SlotLost (invalidated:
    re-snapshot), SchemaDrift (a contract column changed; the batch holding it
    is not applied), ConnectionFailed.
    """
    streamer = _Streamer(
        settings,
        slot=slot,
        batch_rows=batch_rows,
        batch_ms=batch_ms,
        refresh_views=refresh_views,
        refresh_ms=refresh_ms,
        heartbeat_s=heartbeat_s,
        stop=stop or threading.Event(),
        on_batch=on_batch,
        on_refresh=on_refresh,
        on_slot=on_slot,
        on_heartbeat=on_heartbeat,
    )
    return streamer.run(reconnects=reconnects)


#: while a batch is applied, a status update goes to the walsender this often (its
#: wal_sender_timeout is 60 s by default)
KEEPALIVE_S = 10.0


@contextmanager
def _keeping_alive(cur: Any, every_s: float) -> Iterator[None]:
    """Send the walsender a status update every ``every_s`` while the block runs (the
    positions last sent: nothing is confirmed early). The stream does not use the replication
    cursor meanwhile; the thread is joined before the block's caller does again."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every_s):
            try:
                cur.send_feedback(force=True)
            except replication.errors():  # the connection went: the stream finds out next
                return

    beating = threading.Thread(target=beat, name="acme-mv cdc keepalive", daemon=True)
    beating.start()
    try:
        yield
    finally:
        done.set()
        beating.join()


class _Streamer:
    def __init__(
        self,
        settings: Settings,
        *,
        slot: str,
        batch_rows: int,
        batch_ms: float,
        refresh_views: bool,
        refresh_ms: float,
        heartbeat_s: float,
        stop: threading.Event,
        on_batch: Callable[[BatchResult], None] | None,
        on_refresh: Callable[[RefreshResult], None] | None,
        on_slot: Callable[[SlotLag], None] | None = None,
        on_heartbeat: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_slot = on_slot
        self.on_heartbeat = on_heartbeat
        self.next_observe = 0.0
        self.slot = slot
        self.batch_rows = batch_rows
        self.batch_s = batch_ms / 1000
        self.heartbeat_s = heartbeat_s
        self.stop = stop
        self.on_batch = on_batch
        self.saved_lsn = 0
        #: the source's WAL position at the session's start or when last asked (``_behind``)
        self.backlog_lsn = 0
        #: the source's WAL position and clock when the last heartbeat asked the walsender
        self.probe: tuple[int, dt.datetime] | None = None
        self.publication = ""
        self.batches = self.transactions = self.changes = self.skipped = self.heartbeats = 0
        self.resync_skipped = 0
        #: the most changes held in memory at once (the batch's and the open transaction's)
        self.max_buffered = 0
        #: chunks of large transactions spilled to the warehouse
        self.spilled = 0
        #: ``cdc resync``'s table -> snapshot LSN, as read when the replication session began
        self.resync: dict[str, str] = {}
        self.encoding = "UTF8"
        self.busy = _BusySlot(slot)
        self.refresher = (
            Refresher(settings, min_interval_s=refresh_ms / 1000, on_refresh=on_refresh)
            if refresh_views
            else None
        )

    def run(self, *, reconnects: int) -> StreamResult:
        try:
            if self.refresher is None:
                return self._run(reconnects=reconnects)
            self.refresher.start()
            try:
                result = self._run(reconnects=reconnects)
            except BaseException:
                self.refresher.abandon()  # the stream's error is the one to report
                raise
            self.refresher.close()  # a last refresh covers every applied batch
            return result
        except (psycopg.OperationalError, ConnectionLost) as exc:
            if is_data_error(exc):
                raise  # about the data, not a connection
            # the warehouse (or the source's ordinary connection) went away: the batch in
            # progress rolled back and was not confirmed; a new run resumes from the warehouse
            raise ConnectionFailed(
                "Change capture lost a database connection: "
                f"{first_line(exc)}; nothing of the batch in "
                "progress was kept, acme-mv cdc run resumes from the warehouse's position",
                role=exc.role if isinstance(exc, ConnectionLost) else "unknown",
            ) from None

    def _run(self, *, reconnects: int) -> StreamResult:
        failures = 0
        lost = 0
        busy = self.busy
        with (
            connection(self.settings.database_url, role="warehouse", autocommit=True) as wh,
            connection(self.settings.effective_source_url, role="source", autocommit=True) as src,
        ):
            revision.require_head(wh)
            src.execute(
                "SELECT set_config('application_name', %s, false)", (replication.APPLICATION_NAME,)
            )
            saved = saved_position(wh, self.slot)
            if saved is None:
                raise NotSetUp(
                    "The warehouse has no change capture position "
                    f"for slot {self.slot!r}: run acme-mv cdc setup",
                    slot=self.slot,
                )
            self._refresh_if_behind(wh)  # a batch no refresh included yet (``cdc setup``'s)
            self.saved_lsn = pgoutput.lsn_from_str(saved.lsn)
            self.publication = saved.publication
            self.encoding = one_value(src, "SELECT current_setting('server_encoding')", kind=str)
            types: dict[tuple[int, int], str] = {}

            def type_name(oid: int, typmod: int) -> str:
                if (oid, typmod) not in types:
                    found = optional_value(
                        src, "SELECT format_type(%s::oid, %s)", (oid, typmod), kind=str
                    )
                    types[(oid, typmod)] = found or "?"
                return types[(oid, typmod)]

            while not self.stop.is_set():
                check_slot(src, self.slot)
                self.next_observe = 0.0
                self._observe(src)
                types.clear()
                self.resync = self._read_resync(wh)
                decoder = Decoder(
                    type_name,
                    resync={t: pgoutput.lsn_from_str(lsn) for t, lsn in self.resync.items()},
                )
                try:
                    progressed = self._session(wh, src, decoder)
                except _Resynced:
                    log.info("a table was re-copied (acme-mv cdc resync): streaming again")
                    continue
                except replication.lost_connection_errors() as exc:
                    if getattr(exc, "pgcode", None) == OBJECT_IN_USE:
                        self.stop.wait(busy.wait(src))
                        continue
                    lost += 1
                    failures = 0 if self._progressed_since_failure else failures + 1
                    if failures > reconnects:
                        raise ConnectionFailed(
                            "The replication connection to the source "
                            f"failed {failures} times in a row: "
                            f"{replication.describe(exc)}",
                            role="source",
                        ) from None
                    log.warning(
                        "replication connection lost (%s); resuming from %s",
                        replication.describe(exc),
                        pgoutput.lsn_to_str(self.saved_lsn),
                    )
                    self.stop.wait(RECONNECT_PAUSE_S)
                    continue
                except replication.errors() as exc:
                    raise CdcError(
                        f"Change capture failed on the source: {replication.describe(exc)}"
                    ) from None
                finally:
                    self.resync_skipped += decoder.skipped_changes
                if not progressed:
                    break
        return StreamResult(
            batches=self.batches,
            transactions=self.transactions,
            changes=self.changes,
            skipped_transactions=self.skipped,
            heartbeats=self.heartbeats,
            reconnects=lost,
            lsn=pgoutput.lsn_to_str(self.saved_lsn),
            resync_skipped_changes=self.resync_skipped,
            max_buffered_changes=self.max_buffered,
            spilled_chunks=self.spilled,
        )

    _progressed_since_failure = False

    def _observe(self, src: Conn) -> None:
        """Hand ``on_slot`` the slot's retained WAL and lag, at most every heartbeat."""
        now = time.monotonic()
        if self.on_slot is None or now < self.next_observe:
            return
        self.next_observe = now + max(self.heartbeat_s, 1.0)
        found = (
            src.cursor(row_factory=class_row(SlotLag))
            .execute(_SLOT_LAG_SQL, (self.slot,))
            .fetchone()
        )
        if found is not None:
            self.on_slot(found)

    def _session(self, wh: Conn, src: Conn, decoder: Decoder) -> bool:
        """One replication connection, until ``stop``; returns False when stopped."""
        self._progressed_since_failure = False
        repl = replication.connect(self.settings.effective_source_url)
        try:
            cur = repl.cursor()
            cur.start_replication(
                slot_name=self.slot,
                decode=False,
                start_lsn=self.saved_lsn,
                options={"proto_version": "1", "publication_names": self.publication},
                status_interval=max(self.heartbeat_s, 1.0),  # psycopg2's own periodic feedback
            )
            self.busy.reset()  # START_REPLICATION succeeded: the slot is ours
            log.info("streaming slot %s from %s", self.slot, pgoutput.lsn_to_str(self.saved_lsn))
            batch = Batch()
            batch_started = 0.0
            next_heartbeat = time.monotonic() + self.heartbeat_s
            asked_keepalive = False
            spill = Spill()
            spill.reset(wh)  # what an interrupted session spilled is sent again
            self.backlog_lsn = self._source_position(src)
            paused = False
            while not self.stop.is_set():
                if self.refresher is not None:
                    self.refresher.check()
                self._observe(src)
                # the messages already received, up to a commit or a batch's worth of changes:
                # the checks around once a transaction, not once a message
                done = None
                msg = cur.read_message()
                while msg is not None:
                    done = decoder.feed(msg.payload)
                    if done is not None or batch.changes + decoder.pending >= self.batch_rows:
                        break
                    msg = cur.read_message()
                now = time.monotonic()
                buffered = batch.changes + (decoder.pending if done is None else len(done.changes))
                self.max_buffered = max(self.max_buffered, buffered)
                if msg is not None:
                    paused = False
                    if done is None and buffered >= self.batch_rows and decoder.in_transaction:
                        # a transaction outgrowing the batch: apply what is gathered, then
                        # spill its changes in chunks of a batch's size
                        if not batch.empty:
                            self._apply(wh, cur, batch)
                            batch = Batch()
                        if decoder.pending >= self.batch_rows:
                            spill.add(wh, decoder.take(), encoding=self.encoding)
                            self.spilled += 1
                        continue
                    if done is not None:
                        if done.end_lsn <= self.saved_lsn:
                            # already in the warehouse (applied before a crash or a reconnect)
                            self.skipped += 1
                            if spill.chunks:
                                spill.reset(wh)
                        # (a transaction that changed nothing published:
                        # the heartbeat moves past it)
                        elif done.changes or done.spilled:
                            if batch.empty:
                                batch_started = now
                            batch.add(done, spill=spill)
                            if spill.chunks:  # a batch of its own
                                self._apply(wh, cur, batch)
                                batch = Batch()
                                spill.reset(wh)
                                next_heartbeat = time.monotonic() + self.heartbeat_s
                                continue
                    full = batch.changes >= self.batch_rows or (
                        not batch.empty
                        and now - batch_started >= self.batch_s
                        and not self._behind(src, batch)
                    )
                    if not full:
                        continue
                if (
                    msg is None
                    and not batch.empty
                    and not paused
                    and batch.end_lsn < self.backlog_lsn
                ):
                    # a pause in a backlog (the walsender reads WAL that holds nothing for
                    # us, or waits for the CPU): up to batch_ms for more, not a small batch
                    paused = True
                    self._wait(cur, self.batch_s)
                    continue
                if not batch.empty:
                    self._apply(wh, cur, batch)
                    batch = Batch()
                    paused = False
                    next_heartbeat = time.monotonic() + self.heartbeat_s
                    continue
                if decoder.in_transaction:
                    self._wait(cur, 0.1)
                    continue
                if time.monotonic() >= next_heartbeat or asked_keepalive:
                    if asked_keepalive:
                        self._heartbeat(wh, cur, int(cur.wal_end))
                        asked_keepalive = False
                        next_heartbeat = time.monotonic() + self.heartbeat_s
                    else:
                        # where the source is, and when, before the walsender says where it
                        # is: an answer at or past it means every transaction committed by
                        # then is applied (the heartbeat's freshness)
                        self.probe = self._source_now(src)
                        cur.send_feedback(
                            reply=True, force=True
                        )  # the answer's wal_end is read next time
                        asked_keepalive = True
                        self._wait(cur, min(1.0, self.heartbeat_s))
                        continue
                self._wait(cur, min(max(next_heartbeat - time.monotonic(), 0.01), 1.0))
            return False
        except replication.errors() as exc:
            # psycopg2's lost-connection errors (and a slot in use, by its code) pass as they are
            lost_already = isinstance(exc, replication.lost_connection_errors())
            if not lost_already and replication.is_lost(exc, repl):
                raise replication.lost(exc) from exc
            raise
        finally:
            repl.close()

    def _behind(self, src: Conn, batch: Batch) -> bool:
        """Whether the source had written past ``batch`` when last asked (the session's start,
        or the last time a batch was due by ``batch_ms``): the stream reads a backlog, and the
        batch fills up to ``batch_rows`` (fewer, larger warehouse transactions catch up
        sooner). Asked again, once, when the batch is past the position last read."""
        if batch.end_lsn < self.backlog_lsn:
            return True
        self.backlog_lsn = self._source_position(src)
        return batch.end_lsn < self.backlog_lsn

    def _source_now(self, src: Conn) -> tuple[int, dt.datetime]:
        """The source's WAL written so far (inserted; a standby's: replayed) and its clock."""
        row = src.execute(_SOURCE_NOW_SQL).fetchone()
        if row is None or not isinstance(row[1], dt.datetime):
            raise UnexpectedResult(f"the source's position and clock: {row!r}")
        return pgoutput.lsn_from_str(str(row[0])) if row[0] else 0, row[1]

    def _source_position(self, src: Conn) -> int:
        """The source's WAL the walsender can send (flushed; a standby's: replayed)."""
        found = optional_value(src, _SOURCE_POSITION_SQL, kind=str)
        return pgoutput.lsn_from_str(found) if found else 0

    def _wait(self, cur: Any, timeout: float) -> None:
        select.select([cur], [], [], timeout)

    def _apply(self, wh: Conn, cur: Any, batch: Batch) -> None:
        started = time.monotonic()
        # a long apply (a spilled transaction of millions of changes) must not leave the
        # walsender without a word for wal_sender_timeout: it would end the connection, and
        # the transaction, sent again whole, would time out again
        with (
            _keeping_alive(cur, KEEPALIVE_S),
            wh.transaction(),
            open_batch(wh, tables=batch.table_names) as opened,
        ):
            if not self._read_resync(wh).items() <= self.resync.items():
                # re-copied since this session began (the lock is ours now): its changes from
                # before the copy must be dropped, which this batch may hold; start again
                raise _Resynced
            batch_id = opened.batch_id
            opened.source_at = batch.commit_time  # the reports' freshness (acme_mv.run.health)
            written = write(wh, batch, encoding=self.encoding)
            wh.execute(
                _SAVE_BATCH_SQL,
                (
                    pgoutput.lsn_to_str(batch.end_lsn),
                    pgoutput.lsn_to_str(batch.commit_lsn),
                    batch.commit_time,
                    batch_id,
                    pgoutput.lsn_to_str(batch.end_lsn),
                    self.slot,
                ),
            )
        committed_at = dt.datetime.now(dt.UTC)
        # the warehouse holds it: a reconnect (the walsender may have timed out during a long
        # apply) resumes after it, whether or not the confirmation below gets through
        self.saved_lsn = batch.end_lsn
        self._progressed_since_failure = True
        self.batches += 1
        self.transactions += batch.transactions
        self.changes += batch.changes
        if self.refresher is not None:
            self.refresher.request()
        result = BatchResult(
            batch_id=batch_id,
            transactions=batch.transactions,
            changes=batch.changes,
            written=written,
            lsn=pgoutput.lsn_to_str(batch.end_lsn),
            first_commit_at=batch.first_commit_time,
            last_commit_at=batch.commit_time,
            committed_at=committed_at,
            apply_seconds=time.monotonic() - started,
        )
        log.debug(
            "batch %d: %d transactions, %d changes (%d versions, "
            "%d tombstones, %d mirror rows, %d mirror deletes) "
            "in %.3f s, position %s",
            batch_id,
            batch.transactions,
            batch.changes,
            written.versions,
            written.tombstones,
            written.mirror_rows,
            written.mirror_deleted,
            result.apply_seconds,
            result.lsn,
        )
        if self.on_batch is not None:
            self.on_batch(result)
        # only now may the source forget these transactions
        cur.send_feedback(write_lsn=batch.end_lsn, flush_lsn=batch.end_lsn, force=True)

    def _read_resync(self, wh: Conn) -> dict[str, str]:
        found = optional_value(
            wh, "SELECT resync FROM staging.cdc_state WHERE slot_name = %s", (self.slot,), kind=dict
        )
        return {str(t): str(lsn) for t, lsn in (found or {}).items()}

    def _refresh_if_behind(self, wh: Conn) -> None:
        """Ask for a refresh when the reports miss a committed batch that this stream did not
        write (``cdc setup``'s initial copy or re-snapshot, another writer's batch)."""
        if self.refresher is None or self.refresher.pending:
            return
        late = behind(wh)
        if late is not None:
            log.info(
                "the reports include batches up to %d, staging up to %d: refreshing",
                late.included,
                late.newest,
            )
            self.refresher.request()

    def _heartbeat(self, wh: Conn, cur: Any, lsn: int) -> None:
        """Nothing unapplied: save and confirm the server's
        position (WAL need not be kept for us)."""
        lsn = max(lsn, self.saved_lsn)
        wh.execute(
            "UPDATE staging.cdc_state SET lsn = %s::pg_lsn, caught_up_at = clock_timestamp(), "
            "updated_at = clock_timestamp() WHERE slot_name = %s",
            (pgoutput.lsn_to_str(lsn), self.slot),
        )
        if self.probe is not None and lsn >= self.probe[0]:
            # everything the source had written when probed is applied: the newest batch
            # brings the reports up to that moment
            wh.execute(_CAUGHT_UP_SQL, {"at": self.probe[1], "slot": self.slot})
            log.debug("caught up with the source as of %s", self.probe[1].isoformat())
        self.probe = None
        cur.send_feedback(write_lsn=lsn, flush_lsn=lsn, force=True)
        self.saved_lsn = lsn
        self.heartbeats += 1
        self._progressed_since_failure = True
        self._refresh_if_behind(wh)
        log.debug("heartbeat at %s", pgoutput.lsn_to_str(lsn))
        if self.on_heartbeat is not None:
            self.on_heartbeat()


_SOURCE_NOW_SQL = """
SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
             ELSE pg_current_wal_insert_lsn() END)::text, clock_timestamp()
"""
#: a caught-up heartbeat's moment of the source, for the newest batch: staging then holds every
#: transaction the source had committed by then (the stream's, and those of a resync or a
#: re-snapshot, which the stream skips). Not when another slot feeds this warehouse.
_CAUGHT_UP_SQL = """
UPDATE staging.sync_batches AS b SET source_at = %(at)s
WHERE b.batch_id = (SELECT max(batch_id) FROM staging.sync_batches)
  AND coalesce(b.source_at, b.started_at) < %(at)s
  AND NOT EXISTS (SELECT 1 FROM staging.cdc_state AS c WHERE c.slot_name <> %(slot)s)
"""

_SOURCE_POSITION_SQL = """
SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
             ELSE pg_current_wal_flush_lsn() END)::text
"""

#: a batch's position; ``resync`` loses the tables whose copy the new position has passed
#: (every later transaction commits after their snapshot: nothing of theirs is dropped)
_SAVE_BATCH_SQL = """
UPDATE staging.cdc_state SET lsn = %s::pg_lsn, last_commit_lsn = %s::pg_lsn,
    last_commit_at = %s, last_batch_id = %s,
    resync = (SELECT coalesce(jsonb_object_agg(key, value), '{}') FROM jsonb_each_text(resync)
              WHERE value::pg_lsn > %s::pg_lsn),
    updated_at = clock_timestamp()
WHERE slot_name = %s
"""


class _Resynced(Exception):
    """A table was re-copied (``cdc resync``) since this replication session began."""


class _BusySlot:
    """Waiting for a slot another process streams from: backoff from SLOT_BUSY_FIRST_S to
    SLOT_BUSY_MAX_S, and one log line a minute naming the process that holds the slot."""

    def __init__(self, slot: str) -> None:
        self.slot = slot
        self.tries = 0
        self.since = 0.0
        self.next_log = 0.0

    def wait(self, src: Conn) -> float:
        """The slot was busy once more: log when a line is due; returns the pause before the
        next try."""
        now = time.monotonic()
        if not self.tries:
            self.since = self.next_log = now
        self.tries += 1
        pause = backoff_s(self.tries, first_s=SLOT_BUSY_FIRST_S, max_s=SLOT_BUSY_MAX_S)
        if now >= self.next_log:
            self.next_log = now + SLOT_BUSY_LOG_EVERY_S
            log.warning(
                "replication slot %s is in use by %s; waiting for it (for %.0f s so far, "
                "next try in %.0f s)",
                self.slot,
                slot_holder(src, self.slot),
                now - self.since,
                pause,
            )
        return pause

    def reset(self) -> None:
        if self.tries:
            log.info(
                "replication slot %s is free again after %.0f s",
                self.slot,
                time.monotonic() - self.since,
            )
        self.tries = 0
