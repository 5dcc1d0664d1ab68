"""The views' refresh in a thread of its own, so that the stream never waits for it.

A refresh of the current-day views takes a few hundred milliseconds; done
between batches, every change arriving meanwhile waits in the socket (the
capture lag then is the refresh time). Here the stream only *requests* a
refresh after each batch commits; this thread refreshes (at most every
``min_interval_s``), each time including every batch committed before it
starts, and coalesces requests made while it runs into one more refresh.
A refresh error is kept and re-raised in the stream's thread by :meth:`check`.
The thread refreshes on one warehouse connection it keeps (a connect is most of a small
refresh's time); a refresh that fails closes it, and the next one connects again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg

from acme_mv.config import Settings
from acme_mv.db import Conn, connect, server_error
from acme_mv.reports.refresh import RefreshResult, refresh

log = logging.getLogger(__name__)


class Refresher:
    def __init__(
        self,
        settings: Settings,
        *,
        min_interval_s: float,
        on_refresh: Callable[[RefreshResult], None] | None = None,
    ) -> None:
        self.settings = settings
        self.min_interval_s = min_interval_s
        self.on_refresh = on_refresh
        self._cond = threading.Condition()
        self._requested = 0  # batches committed (requests), ever
        self._covered = 0  # requests included in a finished refresh
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="acme-mv cdc refresh", daemon=True)
        self._conn: Conn | None = None
        self.refreshes = 0

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        """A batch committed: refresh soon."""
        with self._cond:
            self._requested += 1
            self._cond.notify()

    @property
    def pending(self) -> bool:
        """A request that no finished refresh covers yet."""
        with self._cond:
            return self._covered < self._requested

    def check(self) -> None:
        """Re-raise a refresh error in the caller's thread."""
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop the thread; refresh once more, here, if a
        batch committed after the last refresh began."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        try:
            self.check()
            if self._covered < self._requested:
                self._run(self._requested)
        finally:
            self._disconnect()

    def abandon(self) -> None:
        """Stop the thread (after the refresh in progress), no last refresh, errors dropped."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        self._disconnect()

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _loop(self) -> None:
        last = float("-inf")
        while True:
            with self._cond:
                while self._covered == self._requested and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                target = self._requested
            pause = last + self.min_interval_s - time.monotonic()
            if pause > 0:
                time.sleep(pause)
                with self._cond:
                    target = self._requested
            last = time.monotonic()
            try:
                self._run(target)
            except BaseException as exc:  # re-raised in the stream's thread
                self._error = exc
                return

    def _run(self, target: int) -> None:
        url = self.settings.database_url
        if self._conn is None or self._conn.closed:
            self._conn = connect(url, role="warehouse", autocommit=True)
        conn = self._conn
        user = conn.info.user
        try:
            result = refresh(self.settings, conn=conn)
        except psycopg.Error as exc:  # refresh closed the connection: name the warehouse
            wrapped = server_error(exc, role="warehouse", url=url, user=user)
            raise (wrapped or exc) from exc
        with self._cond:
            self._covered = max(self._covered, target)
        self.refreshes += 1
        if self.on_refresh is not None:
            self.on_refresh(result)
