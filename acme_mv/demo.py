"""``acme-mv demo``: the whole job on an embedded PostgreSQL with sample data.

Two databases on one embedded server (kept in the per-user cache directory and
reused): ``acme_source`` plays ACME's transactional database, ``acme_warehouse``
holds staging and analytics. The demo fills the source once (``--reset`` starts
over), then runs migrate, sync, refresh and export, optionally lets the
simulator write for a while and syncs + refreshes again, and returns the
reports for display.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psycopg
from psycopg.conninfo import make_conninfo

from acme_mv import embedded, migrate, sync
from acme_mv.config import Settings
from acme_mv.db import ensure_database, first_line, schema_exists
from acme_mv.reports import export, refresh
from acme_mv.run import loop as runner
from acme_mv.sample import load, schema, simulate

log = logging.getLogger(__name__)

SOURCE_DB = "acme_source"
WAREHOUSE_DB = "acme_warehouse"

T = TypeVar("T")


@dataclass
class DemoResult:
    settings: Settings
    timings: dict[str, float] = field(default_factory=dict)
    exported: list[Path] = field(default_factory=list)
    reports: dict[str, tuple[list[str], list[tuple[object, ...]]]] = field(default_factory=dict)

    def timed(self, step: str, fn: Callable[[], T]) -> T:
        """Run one step, log and keep its wall time (a repeated step is "<step> again")."""
        started = time.perf_counter()
        value = fn()
        if step in self.timings:
            step = f"{step} again"
        self.timings[step] = time.perf_counter() - started
        log.info("%s done in %.2f s", step, self.timings[step])
        return value


def run_demo(
    *,
    orders: int = 20_000,
    reset: bool = False,
    simulate_seconds: float = 0.0,
    simulate_rate: float = 100.0,
    output_dir: Path = Path("exports"),
    timezone: str = "UTC",
) -> DemoResult:
    started = time.perf_counter()
    server = embedded.start("demo")
    log.info(
        "server  embedded PostgreSQL ready in %.2f s (%s)",
        time.perf_counter() - started,
        embedded.cache_dir(),
    )
    with psycopg.connect(server, autocommit=True) as conn:
        for name in (SOURCE_DB, WAREHOUSE_DB):
            ensure_database(conn, name, recreate=reset)
    source = make_conninfo(server, dbname=SOURCE_DB)
    warehouse = make_conninfo(server, dbname=WAREHOUSE_DB)
    settings = Settings(database_url=warehouse, source_url=source, timezone=timezone)
    result = DemoResult(settings=settings)

    def fill_source() -> None:
        with psycopg.connect(source) as conn:
            if schema_exists(conn, schema.SCHEMA) and schema.has_rows(conn, "orders"):
                log.info(
                    "source  reused: %s already holds orders (use --reset to rebuild)", SOURCE_DB
                )
                return
            load.load(conn, orders=orders, mode="replace")

    result.timed("source", fill_source)
    result.timed("migrate", lambda: migrate.upgrade(warehouse))
    result.timed("sync", lambda: sync.sync(settings))
    result.timed("refresh", lambda: refresh.refresh(settings))
    if simulate_seconds > 0:
        result.timed(
            "simulate",
            lambda: simulate.simulate(
                source, rate=simulate_rate, duration=simulate_seconds, seed=None
            ),
        )
        result.timed("sync", lambda: sync.sync(settings))
        result.timed("refresh", lambda: refresh.refresh(settings))
    output_dir.mkdir(parents=True, exist_ok=True)
    result.exported = result.timed(
        "export", lambda: export.export_all(settings, output_dir=output_dir, force=True)
    )
    result.reports = {name: export.fetch(settings, name) for name in export.REPORTS}
    return result


@contextmanager
def live(settings: Settings, *, rate: float = 20.0, interval: float = 5.0) -> Iterator[None]:
    """While the block runs, the simulator writes to the source and the runner syncs + refreshes
    every ``interval`` seconds (``demo --serve``: the dashboard has something to follow)."""
    stop = threading.Event()

    def guarded(name: str, fn: Callable[[], object]) -> Callable[[], None]:
        def body() -> None:
            try:
                fn()
            except Exception as exc:  # one line, not a thread traceback
                log.error("demo %s stopped: %s", name, first_line(exc))

        return body

    threads = [
        threading.Thread(
            target=guarded(
                "simulator",
                lambda: simulate.simulate(
                    settings.effective_source_url, rate=rate, duration=None, seed=None, stop=stop
                ),
            ),
            name="demo simulator",
            daemon=True,
        ),
        threading.Thread(
            target=guarded("runner", lambda: runner.run(settings, interval=interval, stop=stop)),
            name="demo runner",
            daemon=True,
        ),
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()
