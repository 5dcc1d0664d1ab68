"""``acme-mv run``: sync, then refresh, every interval, until told to stop.

One cycle = one sync (one batch, one warehouse transaction) + one refresh
(one transaction). SIGINT/SIGTERM only set a flag: the step in progress
finishes (its transaction commits), the loop exits before the next step and
the process exits 0. A second signal interrupts at once (the open transaction
rolls back, which is safe too).

Each cycle logs one line: rows synced, the refresh's seconds and kind, and
the freshness of the reports = now minus the time the newest included sync
read the source.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType

from acme_mv.config import Settings
from acme_mv.errors import ConfigError
from acme_mv.refresh import RefreshResult, refresh

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SyncSummary:
    """What the runner needs to know about one sync."""

    rows: int
    #: when the sync read the source (None: use the batch's recorded time)
    read_at: datetime | None = None


SyncStep = Callable[[], SyncSummary]


@dataclass(frozen=True, kw_only=True)
class Cycle:
    number: int
    rows_synced: int
    sync_seconds: float
    refresh: RefreshResult
    #: now minus the newest included sync's read time; None before any sync
    freshness_seconds: float | None


_INTERVAL = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_interval(text: str) -> float:
    """``"10s"``, ``"500ms"``, ``"2m"``, ``"1h"`` or a plain number of seconds -> seconds."""
    match = _INTERVAL.match(text)
    if match is None:
        raise ConfigError(f"Interval {text!r} is not a duration such as 10s, 500ms, 2m or 1h")
    return float(match["n"]) * _UNIT_S[match["unit"] or "s"]


def default_sync_step(settings: Settings) -> SyncStep:
    """One ``acme_mv.sync.sync(settings)``, summarized for the cycle line."""
    from acme_mv.sync import sync

    def step() -> SyncSummary:
        result = sync(settings)
        return SyncSummary(rows=result.rows_new, read_at=result.read_at)

    return step


def run(
    settings: Settings,
    *,
    interval: float,
    once: bool = False,
    sync_step: SyncStep | None = None,
    stop: threading.Event | None = None,
    on_cycle: Callable[[Cycle], None] | None = None,
) -> int:
    """Cycle until ``stop`` is set (or a signal arrives, or after one cycle with ``once``); returns the cycles run."""
    flag = _StopFlag(stop or threading.Event())
    step = sync_step or default_sync_step(settings)
    cycles = 0
    with _stop_on_signals(flag):
        while not flag.is_set():
            started = time.monotonic()
            summary = step()
            sync_s = time.monotonic() - started
            if flag.is_set():
                log.info("stopping: sync committed, refresh skipped")
                break
            result = refresh(settings)
            cycles += 1
            cycle = Cycle(
                number=cycles,
                rows_synced=summary.rows,
                sync_seconds=sync_s,
                refresh=result,
                freshness_seconds=_freshness(summary, result),
            )
            log.info(_describe(cycle))
            if on_cycle is not None:
                on_cycle(cycle)
            if once:
                break
            flag.sleep(interval - (time.monotonic() - started))
    if flag.is_set():
        log.info("stopped cleanly after %d cycle(s)", cycles)
    return cycles


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


def _freshness(summary: SyncSummary, result: RefreshResult) -> float | None:
    read_at = summary.read_at or result.refreshed_batch_at
    if read_at is None:
        return None
    return max(0.0, (datetime.now(UTC) - read_at).total_seconds())


def _describe(cycle: Cycle) -> str:
    r = cycle.refresh
    kind = f"historic+current ({r.reason})" if r.rebuilt_historic else "current"
    fresh = "n/a" if cycle.freshness_seconds is None else f"{cycle.freshness_seconds:.1f}s"
    return (
        f"cycle {cycle.number}: synced {cycle.rows_synced} rows in {cycle.sync_seconds:.2f}s, "
        f"refreshed {kind} in {r.total_seconds:.2f}s, freshness {fresh}"
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
