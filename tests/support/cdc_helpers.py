"""Change capture in tests: a source, a warehouse, a real slot (the ``slot_name`` fixture), and
catching up."""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from acme_mv import cdc
from acme_mv.cdc.pgoutput import lsn_from_str
from acme_mv.config import Settings
from tests.support.database import DatabaseFactory
from tests.support.reports_oracle import assert_views_match, expected
from tests.support.sync_helpers import assert_converged, scalar

#: each source table's key, and an update of its non-key columns by ``%(n)s`` (random writes)
KEYS = {
    "orders": "order_id",
    "order_items": "order_item_id",
    "customers": "customer_id",
    "products": "product_id",
}
SET_SQL = {
    "orders": "status = (ARRAY['PENDING', 'PROCESSING', 'COMPLETED', NULL])[1 + %(n)s %% 4]",
    "order_items": "quanity = %(n)s, product_id = 1 + %(n)s %% 3",
    "customers": "customer_name = 'c' || %(n)s",
    "products": "product_name = 'p' || %(n)s",
}


def restart_waits(records: list[logging.LogRecord]) -> tuple[list[float], list[str]]:
    """From ``run --cdc``'s log: the waits logged after a first failure in a row, and every
    "change capture failed" line."""
    waits = [
        float(m.group(1))
        for r in records
        if (m := re.search(r"restart in ([0-9.]+)s \(1 failure in a row\)", r.getMessage()))
    ]
    failed = [r.getMessage() for r in records if "change capture failed" in r.getMessage()]
    return waits, failed


#: keepalive requests while idle: catching up ends at the first heartbeat past the target
TEST_HEARTBEAT_S = 0.1
#: a safety net only (a stuck stream fails the test instead of hanging it)
CATCH_UP_TIMEOUT_S = 120


@dataclass
class Streaming:
    stop: threading.Event = field(default_factory=threading.Event)
    result: cdc.StreamResult | None = None
    error: BaseException | None = None


@dataclass
class Cdc:
    src: str
    wh: str
    slot: str

    @property
    def settings(self) -> Settings:
        return Settings(database_url=self.wh, source_url=None if self.src == self.wh else self.src)

    @property
    def publication(self) -> str:
        return self.slot  # unique per test, like the slot

    def setup(self) -> cdc.SetupResult:
        return cdc.setup(self.settings, slot=self.slot, publication=self.publication)

    def saved_lsn(self) -> int:
        return lsn_from_str(
            str(
                scalar(
                    self.wh,
                    "SELECT lsn::text FROM staging.cdc_state WHERE slot_name = %s",
                    (self.slot,),
                )
            )
        )

    def source_lsn(self) -> int:
        return lsn_from_str(str(scalar(self.src, "SELECT pg_current_wal_insert_lsn()::text")))

    def wait_saved(self, handle: Streaming, target: int) -> None:
        """Wait until the running stream's warehouse position reaches ``target``."""
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        while self.saved_lsn() < target:
            assert handle.error is None, handle.error
            assert time.monotonic() < deadline, "the stream did not catch up"
            time.sleep(0.05)

    @contextmanager
    def streaming(self, **options: Any) -> Iterator[Streaming]:
        """Stream in a thread; on leaving the block, wait until the warehouse holds everything
        the source had committed by then, and stop (the stream's totals in ``.result``)."""
        handle = Streaming()

        def run() -> None:
            try:
                handle.result = cdc.stream(
                    self.settings,
                    slot=self.slot,
                    heartbeat_s=TEST_HEARTBEAT_S,
                    stop=handle.stop,
                    **options,
                )
            except BaseException as exc:  # re-raised in the test's thread
                handle.error = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield handle
            target = self.source_lsn()
            deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
            while thread.is_alive() and self.saved_lsn() < target:
                assert time.monotonic() < deadline, "the stream did not catch up"
                thread.join(0.05)
        finally:
            handle.stop.set()
            thread.join(CATCH_UP_TIMEOUT_S)
        if handle.error is not None:
            raise handle.error
        assert not thread.is_alive(), "the stream did not stop"

    def catch_up(self, **options: Any) -> cdc.StreamResult:
        """Stream until the warehouse holds everything the source had committed when called."""
        with self.streaming(**options) as handle:
            pass
        assert handle.result is not None
        return handle.result

    def assert_reports_true(self) -> None:
        """The union views (refreshed by the stream) equal the reports computed on the source."""
        with psycopg.connect(self.src) as s:
            want = expected(s)
        with psycopg.connect(self.wh) as w:
            assert_views_match(w, want)

    def assert_staging_equals_source(self) -> None:
        assert_converged(self.src, self.wh)


def drop_slot(server: str, slot: str) -> None:
    """Drop a replication slot, ending the walsender that holds it (tests' teardown)."""
    with psycopg.connect(server, autocommit=True) as conn:
        for _ in range(100):
            row = conn.execute(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if row is None:
                return
            if row[0] is not None:
                conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            else:
                try:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    return
                except (psycopg.errors.ObjectInUse, psycopg.errors.UndefinedObject):
                    pass
            time.sleep(0.1)
        raise AssertionError(f"replication slot {slot} could not be dropped")


@pytest.fixture
def slot_name(server_url: str, make_db: DatabaseFactory) -> Iterator[str]:
    """A unique replication slot name, dropped after the test (even when it failed).

    Slots belong to a database, which cannot be dropped while one exists: this
    fixture is set up after ``make_db``, so it is torn down before it.
    """
    name = f"acme_t_{uuid.uuid4().hex[:12]}"
    yield name
    drop_slot(server_url, name)
