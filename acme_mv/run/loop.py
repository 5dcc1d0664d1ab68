"""``acme-mv run``: sync, then refresh, every interval,
until told to stop; never gives up on a server.

One cycle = one sync (one batch, one warehouse transaction) + one refresh
(one transaction). Each cycle logs one line: rows synced, the refresh's
seconds and kind, and the freshness of the reports = now minus the moment of
the source they are up to (:mod:`acme_mv.run.health`).

Failures. A cycle that fails on a server (refused or lost connection, server
restart, terminated session, login outage, serialization failure) is logged
on one line naming the server (``warehouse`` or ``source``) and retried with
exponential backoff over the failures in a row: 1 s, 2 s, 4 s... capped at
60 s, forever unless ``max_failures`` consecutive failures are allowed at
most; a cycle (or with ``--cdc`` a batch) that succeeds starts it again at 1 s. Nothing half-done
stays: a failed sync rolls back its batch, a failed refresh its transaction.
What waiting cannot fix ends the loop with its error: not migrated, schema
drift, bad configuration, a refused login (password, role, pg_hba.conf),
a missing privilege, or an unexpected error (a bug).

Signals. SIGINT/SIGTERM only set a flag: the step in progress finishes (its
transaction commits), the loop exits before the next step (or during a
backoff wait) and ``run`` returns. A second signal interrupts at once (the
open transaction rolls back, which is safe too).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

import psycopg
import tenacity
from psycopg.rows import args_row

from acme_mv import backoff
from acme_mv.config import Settings, scrub
from acme_mv.db import connection, first_line, is_data_error
from acme_mv.errors import AcmeMvError, ServerError
from acme_mv.reports.refresh import DAY_CHANGED, RefreshResult, refresh
from acme_mv.run import health
from acme_mv.run.metrics import Metrics

if TYPE_CHECKING:
    from acme_mv.sync import TableResult

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SyncSummary:
    """What the runner needs to know about one sync."""

    rows: int


#: one sync; the argument says whether to re-copy from scratch (``sync --full``)
SyncStep = Callable[[bool], SyncSummary]


@dataclass(frozen=True, kw_only=True)
class Cycle:
    number: int
    rows_synced: int
    sync_seconds: float
    refresh: RefreshResult
    #: now minus the newest included sync's read time; None before any sync
    freshness_seconds: float | None
    #: whether this cycle's sync compared every row with the source (``full_every``)
    full: bool = False
    #: failed attempts just before this successful one
    failures_before: int = 0


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Backoff after a failed cycle: ``first_s``, doubling, capped at ``max_s``."""

    first_s: float = 1.0
    max_s: float = 60.0
    #: give up (raise the last error) after this many failed cycles in a row; None: never
    max_failures: int | None = None


def default_sync_step(settings: Settings) -> SyncStep:
    """One ``acme_mv.sync.sync(settings)``, summarized for the cycle line; a warning about the
    source is logged once per step function (once per ``acme-mv run``), not once per cycle."""
    from acme_mv.sync import sync

    warned: set[str] = set()

    def step(full: bool) -> SyncSummary:
        result = sync(settings, full=full, progress=_TableLog(), warned=warned)
        return SyncSummary(rows=result.rows_new)

    return step


class _TableLog:
    """Per-table figures of each sync at DEBUG (``acme-mv -v run``); the cycle line sums them."""

    def start(self, table: str, mode: str) -> None:
        pass

    def advance(self, table: str, nbytes: int) -> None:
        pass

    def finish(self, result: TableResult) -> None:
        log.debug(
            "%s: %s, %d rows read, %d new, %d deleted, %d bytes, %.2f s",
            result.table,
            result.mode,
            result.rows_read,
            result.rows_new,
            result.rows_deleted,
            result.bytes,
            result.seconds,
        )


def is_transient(exc: BaseException) -> bool:
    """Whether waiting and trying again may fix ``exc`` (see the module doc)."""
    if isinstance(exc, AcmeMvError):
        return exc.transient
    if is_data_error(exc):  # the same data fails the same way (an index entry too large...)
        return False
    if isinstance(exc, psycopg.DataError):  # raised here, not by a server: a value Python
        return False  # cannot load ('infinity' as a datetime) loads the same way next time
    # a psycopg error that no connection() claimed: an OperationalError (a COPY cancelled on a
    # live session), or an error libpq made up itself (no SQLSTATE: a connection cut)
    if isinstance(exc, psycopg.OperationalError):
        return True
    return isinstance(exc, psycopg.DatabaseError) and exc.sqlstate is None


def server_of(exc: BaseException) -> str:
    """``warehouse``, ``source`` or ``unknown``: which server a failure came from."""
    return exc.role if isinstance(exc, ServerError) else "unknown"


def full_sync_due(
    *, last_full: datetime | None, first_batch: datetime | None, now: datetime, every: timedelta
) -> bool:
    """Whether ``run --full-every`` should run a full sync (``sync --full``) now (pure).

    The last full copy is the newest batch with ``compared_tables`` (``sync --full``
    compares every row) or ``full_tables`` (a whole re-copy, which a warehouse may hold from
    its past though no writer records one), or else the
    first batch ever (the initial copy is a full one); with no batch at all the
    next sync is an initial copy anyway.
    """
    base = last_full or first_batch
    return base is not None and now - base >= every


def _last_full_sync(settings: Settings) -> tuple[datetime | None, datetime | None, datetime]:
    with connection(settings.database_url, role="warehouse", autocommit=True) as conn:
        row = (
            conn.cursor(row_factory=args_row(_full_sync_times))
            .execute(
                "SELECT max(started_at) FILTER (WHERE full_tables "
                "<> '{}' OR compared_tables <> '{}'), "
                "min(started_at), now() "
                "FROM staging.sync_batches"
            )
            .fetchone()
        )
    assert row is not None  # an aggregate: one row
    return row


def _full_sync_times(
    last_full: datetime | None, first_batch: datetime | None, now: datetime
) -> tuple[datetime | None, datetime | None, datetime]:
    return last_full, first_batch, now


class _Stopped(Exception):
    """The stop flag was set before an attempt began."""


def run(
    settings: Settings,
    *,
    interval: float,
    once: bool = False,
    sync_step: SyncStep | None = None,
    stop: threading.Event | None = None,
    on_cycle: Callable[[Cycle], None] | None = None,
    retry: RetryPolicy | None = None,
    full_every: float | None = None,
    metrics: Metrics | None = None,
) -> int:
    """Cycle until ``stop`` is set (or a signal arrives, or after one good cycle with ``once``).

    Returns the cycles that succeeded. Raises the error of a failure that
    retrying cannot fix, or the last one after ``retry.max_failures``
    consecutive failures.
    """
    flag = _StopFlag(stop or threading.Event())
    step = sync_step or default_sync_step(settings)
    policy = retry or RetryPolicy()
    attempts = 0
    cycles = 0
    failures = _InARow()

    def one_cycle() -> Cycle:
        nonlocal attempts
        if flag.is_set():
            raise _Stopped
        attempts += 1
        full = False
        if full_every is not None:
            last_full, first, now = _last_full_sync(settings)
            full = full_sync_due(
                last_full=last_full, first_batch=first, now=now, every=timedelta(seconds=full_every)
            )
            if full:
                log.info("cycle %d: a full sync is due (--full-every %gs)", attempts, full_every)
        started = time.monotonic()
        summary = step(full)
        sync_s = time.monotonic() - started
        if flag.is_set():
            raise _Stopped
        result = refresh(settings)
        return Cycle(
            number=attempts,
            rows_synced=summary.rows,
            sync_seconds=sync_s,
            refresh=result,
            freshness_seconds=_freshness(result),
            full=full,
            failures_before=failures.count,
        )

    def failed(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is None:
            return
        _failed(settings, metrics, exc, f"cycle {attempts} failed", "retry", state, failures.count)

    retrying = _retrying(policy, flag, failed, failures)
    with _stop_on_signals(flag):
        while not flag.is_set():
            started = time.monotonic()
            try:
                cycle = retrying(one_cycle)
            except _Stopped:
                break
            except BaseException as exc:
                if flag.is_set() and is_transient(exc):
                    break  # asked to stop while retrying
                if is_transient(exc):  # max_failures reached: the last one is logged too
                    if metrics is not None:
                        metrics.cycle_failed(server_of(exc))
                    log.error(
                        "cycle %d failed (%s), giving up after %d failures in a row",
                        attempts,
                        server_of(exc),
                        failures.count,
                        extra={"server": server_of(exc)},
                    )
                raise
            failures.reset()
            cycles += 1
            log.info(_describe(cycle))
            if metrics is not None:
                age = cycle.freshness_seconds
                metrics.cycle_succeeded(
                    rows=cycle.rows_synced,
                    sync_s=cycle.sync_seconds,
                    refresh_s=cycle.refresh.total_seconds,
                    read_at=None if age is None else time.time() - age,
                )
            if on_cycle is not None:
                on_cycle(cycle)
            if once:
                break
            flag.sleep(interval - (time.monotonic() - started))
    if flag.is_set():
        log.info("stopped cleanly after %d cycle(s)", cycles)
    return cycles


def _failed(
    settings: Settings,
    metrics: Metrics | None,
    exc: BaseException,
    what: str,
    then: str,
    state: tenacity.RetryCallState,
    failures: int,
) -> None:
    """Count and log one failure that will be retried (the cycle loop's and ``run --cdc``'s)."""
    server = server_of(exc)
    if metrics is not None:
        metrics.cycle_failed(server)
    line = scrub(first_line(exc), settings.database_url, settings.source_url)
    log.warning(
        "%s (%s): %s; %s in %.3gs (%d failure%s in a row)",
        what,
        server,
        line,
        then,
        state.upcoming_sleep,
        failures,
        "" if failures == 1 else "s",
        extra={"server": server, "failures": failures},
    )


@dataclass
class _InARow:
    """Failures in a row: counted as each one happens, reset by a step that succeeds (a cycle,
    or a batch of ``run --cdc``); the backoff and ``max_failures`` follow it."""

    count: int = 0

    def failed(self, state: tenacity.RetryCallState) -> None:
        self.count += 1

    def reset(self) -> None:
        self.count = 0


def backoff_s(policy: RetryPolicy, failures: int) -> float:
    """The wait after the ``failures``-th failure in a row (pure): ``first_s``, doubling, capped
    at ``max_s``."""
    return backoff.backoff_s(failures, first_s=policy.first_s, max_s=policy.max_s)


def _retrying(
    policy: RetryPolicy,
    flag: _StopFlag,
    failed: Callable[[tenacity.RetryCallState], None],
    in_a_row: _InARow,
) -> tenacity.Retrying:
    """Retry what :func:`is_transient` says may pass, with ``policy``'s capped exponential backoff
    over the failures ``in_a_row`` (a success in between starts it again at ``first_s``), until
    the stop flag is set (or ``policy.max_failures`` in a row); ``failed`` logs each failure."""
    stops: list[tenacity.stop.stop_base] = [tenacity.stop_when_event_set(_EventView(flag))]
    if policy.max_failures is not None:
        limit = policy.max_failures
        stops.append(_StopAfter(lambda: in_a_row.count >= limit))
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        after=in_a_row.failed,
        wait=lambda state: backoff_s(policy, in_a_row.count),
        stop=tenacity.stop_any(*stops),
        sleep=flag.sleep,
        before_sleep=failed,
        reraise=True,
    )


class _StopAfter(tenacity.stop.stop_base):
    """Stop when ``reached()`` says so (``max_failures`` failures in a row)."""

    def __init__(self, reached: Callable[[], bool]) -> None:
        self.reached = reached

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.reached()


class _StopFlag:
    """The caller's event, or a signal. A signal handler only sets ``signalled``: calling
    ``Event.set()`` from a handler can deadlock on the event's own lock."""

    #: longest sleep between looks at the flag (how fast a signal ends the wait)
    POLL_S = 0.2

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self.signalled = False

    def is_set(self) -> bool:
        return self.signalled or self.event.is_set()

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.event.wait(min(left, self.POLL_S))


class _EventView(threading.Event):
    """The stop flag seen as an event (tenacity's ``stop_when_event_set``, the stream's
    ``stop``): ``is_set`` and ``wait`` look at the flag, so a wait lasts its timeout unless a
    stop or a signal comes first. (Not ``self._flag``: that name is the Event's own state.)"""

    def __init__(self, flag: _StopFlag) -> None:
        super().__init__()
        self._stop_flag = flag

    def is_set(self) -> bool:
        return self._stop_flag.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is None:
            while not self.is_set():
                self._stop_flag.sleep(_StopFlag.POLL_S)
        else:
            self._stop_flag.sleep(timeout)
        return self.is_set()


def _freshness(result: RefreshResult) -> float | None:
    """Now minus the start of the newest batch in the reports (as ``status`` reads it)."""
    read_at = result.refreshed_batch_at
    if read_at is None:
        return None
    return max(0.0, (datetime.now(UTC) - read_at).total_seconds())


def _describe(cycle: Cycle) -> str:
    r = cycle.refresh
    kind = f"historic+current ({r.reason})" if r.rebuilt_historic else "current"
    fresh = "n/a" if cycle.freshness_seconds is None else f"{cycle.freshness_seconds:.1f}s"
    full = " (full re-copy)" if cycle.full else ""
    recovered = (
        ""
        if not cycle.failures_before
        else f", recovered after {cycle.failures_before} failed cycle(s)"
    )
    return (
        f"cycle {cycle.number}: synced {cycle.rows_synced} "
        f"rows{full} in {cycle.sync_seconds:.2f}s, "
        f"refreshed {kind} in {r.total_seconds:.2f}s, freshness {fresh}{recovered}"
    )


@contextmanager
def _stop_on_signals(flag: _StopFlag) -> Iterator[None]:
    """SIGINT/SIGTERM stop the loop (the second one interrupts); only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if flag.signalled:
            raise KeyboardInterrupt
        flag.signalled = True

    saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if flag.signalled:
            log.info("signal received: the step in progress finished, stopping")
        for sig, previous in saved.items():
            signal.signal(sig, previous)


#: how often ``run --cdc`` looks whether a scheduled job (the daily mail) is due: the stream
#: has no cycles to hang it on, and a job due at 07:00 then runs by 07:00:30
SCHEDULE_S = 30.0


def run_cdc(
    settings: Settings,
    *,
    slot: str,
    stop: threading.Event | None = None,
    retry: RetryPolicy | None = None,
    metrics: Metrics | None = None,
    keep: timedelta | None = None,
    batch_rows: int | None = None,
    batch_ms: float | None = None,
    refresh_ms: float | None = None,
    heartbeat_s: float | None = None,
    scheduled: Callable[[], None] | None = None,
    schedule_s: float = SCHEDULE_S,
) -> int:
    """``run --cdc``: stream the slot's changes into staging and refresh (``acme_mv.cdc.stream``)
    until ``stop`` is set or a signal arrives; returns the batches applied. ``batch_rows``,
    ``batch_ms``, ``refresh_ms`` and ``heartbeat_s`` tune the stream as in ``acme-mv cdc run``
    (None: its default). A batch or a heartbeat resets the failures in a row.

    ``scheduled`` (the daily mail) runs beside the stream, after its first refresh (or
    ``schedule_s`` seconds, whichever comes first) and then every ``schedule_s`` seconds,
    whether changes arrive or not (:func:`_every`).

    A stream that fails for a reason retrying can fix (a server restarting, a connection
    lost) is started again with the same capped backoff as the cycles of :func:`run`: it
    resumes from the position the warehouse committed, so nothing is lost or doubled. A
    slot that was never set up or was invalidated, or schema drift, ends the run.
    """
    from acme_mv import cdc

    given = {
        "batch_rows": batch_rows,
        "batch_ms": batch_ms,
        "refresh_ms": refresh_ms,
        "heartbeat_s": heartbeat_s,
    }
    tuning: dict[str, Any] = {name: v for name, v in given.items() if v is not None}
    flag = _StopFlag(stop or threading.Event())
    view = _EventView(flag)
    policy = retry or RetryPolicy()
    batches = 0
    failures = _InARow()

    def on_batch(result: cdc.BatchResult) -> None:
        nonlocal batches
        batches += 1
        failures.reset()  # the stream works again: the next failure waits first_s
        log.debug("batch %d: %d changes, position %s", result.batch_id, result.changes, result.lsn)

    refreshed = threading.Event()  # the first scheduled run waits for the stream's first refresh

    def on_refresh(result: RefreshResult) -> None:
        refreshed.set()
        compact_after_fold(settings, keep, result)
        if metrics is not None:
            read_at = result.refreshed_batch_at
            metrics.cycle_succeeded(
                rows=result.delta_rows,
                sync_s=0.0,
                refresh_s=result.total_seconds,
                read_at=None if read_at is None else read_at.timestamp(),
            )

    def on_heartbeat() -> None:
        failures.reset()  # an idle stream that works is a success too
        if metrics is not None and refreshed.is_set():
            # a caught-up heartbeat may have moved the reports' moment (acme_mv.run.health)
            try:
                fresh = health.freshness(settings)
            except (psycopg.Error, AcmeMvError) as exc:
                log.debug(
                    "freshness after a heartbeat: %s", scrub(first_line(exc), settings.database_url)
                )
                return
            if fresh.age_s is not None:
                metrics.caught_up(time.time() - fresh.age_s)

    def on_slot(lag: cdc.SlotLag) -> None:
        if metrics is not None:
            metrics.slot_observed(retained_bytes=lag.retained_bytes, lag_bytes=lag.lag_bytes)

    def one_stream() -> None:
        if flag.is_set():
            raise _Stopped
        cdc.stream(
            settings,
            slot=slot,
            stop=view,
            on_batch=on_batch,
            on_refresh=on_refresh,
            on_slot=on_slot,
            on_heartbeat=on_heartbeat,
            **tuning,
        )

    def failed(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is None:
            return
        _failed(settings, metrics, exc, "change capture failed", "restart", state, failures.count)

    retrying = _retrying(policy, flag, failed, failures)
    with _stop_on_signals(flag), _every(schedule_s, scheduled, view, first=refreshed):
        try:
            retrying(one_stream)
        except _Stopped:
            pass
        except BaseException as exc:
            if not (flag.is_set() and is_transient(exc)):
                raise
    log.info("change capture stopped cleanly after %d batch(es)", batches)
    return batches


@contextmanager
def _every(
    seconds: float,
    job: Callable[[], None] | None,
    stop: threading.Event,
    *,
    first: threading.Event,
) -> Iterator[None]:
    """Run ``job`` in a thread when ``first`` is set (or after ``seconds``) and then every
    ``seconds`` until ``stop`` is set or the block ends. A failure is logged and the job runs
    again at the next tick: a scheduled job never ends the stream (the daily mail records its
    own failures, :mod:`acme_mv.delivery`)."""
    if job is None:
        yield
        return
    done = threading.Event()

    def ended() -> bool:
        return done.is_set() or stop.is_set()

    def wait(until: Callable[[], bool]) -> None:
        deadline = time.monotonic() + seconds
        while not (ended() or until()) and (left := deadline - time.monotonic()) > 0:
            done.wait(min(left, _StopFlag.POLL_S))

    def loop() -> None:
        wait(first.is_set)
        while not ended():
            try:
                job()
            except Exception as exc:  # one line, then the next tick
                log.warning(
                    "a scheduled job failed: %s; it runs again in %gs",
                    scrub(first_line(exc)),
                    seconds,
                )
            wait(lambda: False)

    thread = threading.Thread(target=loop, name="acme-mv schedule", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def compact_after_fold(settings: Settings, keep: timedelta | None, result: RefreshResult) -> None:
    """``run --keep-history``: after a refresh that folded a new day into the historic part, drop
    the history older than ``keep`` (``acme-mv compact``; None keeps everything). A failed
    compaction is logged and tried again after the next fold: it never costs a cycle, and what
    it would have dropped only waits."""
    if keep is None or not result.reason.startswith(DAY_CHANGED):
        return
    from acme_mv.staging import compact

    try:
        done = compact.compact(settings, keep=keep)
    except AcmeMvError as exc:
        log.warning(
            "compaction failed: %s; it runs again after the next day's fold", first_line(exc)
        )
        return
    log.info(
        "compacted: history kept from batch %d; %d delta rows and %d partitions dropped",
        done.history_batch_id,
        done.delta_rows_deleted,
        len(done.partitions_dropped),
    )


def compaction_hook(settings: Settings, keep: timedelta | None) -> Callable[[Cycle], None] | None:
    """:func:`compact_after_fold` as an ``on_cycle`` hook of :func:`run` (None when keeping all)."""
    if keep is None:
        return None
    return lambda cycle: compact_after_fold(settings, keep, cycle.refresh)


def chain(*hooks: Callable[[Cycle], None] | None) -> Callable[[Cycle], None] | None:
    """One ``on_cycle`` hook calling each given one in order (None when there is none)."""
    present = [h for h in hooks if h is not None]
    if not present:
        return None

    def hook(cycle: Cycle) -> None:
        for h in present:
            h(cycle)

    return hook
