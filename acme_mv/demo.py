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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from acme_mv import embedded, migrate
from acme_mv.config import Settings

log = logging.getLogger(__name__)

SOURCE_DB = "acme_source"
WAREHOUSE_DB = "acme_warehouse"


@dataclass
class DemoResult:
    settings: Settings
    timings: dict[str, float] = field(default_factory=dict)
    exported: list[Path] = field(default_factory=list)
    reports: dict[str, tuple[list[str], list[tuple[object, ...]]]] = field(default_factory=dict)


def _ensure_database(server_url: str, name: str, *, reset: bool) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and reset:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            exists = None
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(server_url, dbname=name)


def _timed(result: DemoResult, step: str, fn: Callable[[], object]) -> object:
    started = time.perf_counter()
    value = fn()
    if step in result.timings:
        step = f"{step} again"
    result.timings[step] = time.perf_counter() - started
    log.info("%s done in %.2f s", step, result.timings[step])
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
    from acme_mv import export, refresh, sync
    from acme_mv.sample import load as sample_load
    from acme_mv.sample import simulate as sample_simulate

    server = _timed_start()
    source = _ensure_database(server, SOURCE_DB, reset=reset)
    warehouse = _ensure_database(server, WAREHOUSE_DB, reset=reset)
    settings = Settings(database_url=warehouse, source_url=source, timezone=timezone)
    result = DemoResult(settings=settings)

    def fill_source() -> None:
        with psycopg.connect(source) as conn:
            has_rows = conn.execute(
                "SELECT to_regclass('operations.orders') IS NOT NULL"
            ).fetchone()
            if has_rows and has_rows[0]:
                count = conn.execute("SELECT count(*) FROM operations.orders").fetchone()
                if count and int(str(count[0])) > 0:
                    log.info("source  reused: %s orders already in %s (use --reset to rebuild)", count[0], SOURCE_DB)
                    return
            sample_load.load(conn, orders=orders, mode="replace")

    _timed(result, "source", fill_source)
    _timed(result, "migrate", lambda: migrate.upgrade(warehouse))
    _timed(result, "sync", lambda: sync.sync(settings))
    _timed(result, "refresh", lambda: refresh.refresh(settings))
    if simulate_seconds > 0:
        _timed(
            result,
            "simulate",
            lambda: sample_simulate.simulate(source, rate=simulate_rate, duration=simulate_seconds, seed=None),
        )
        _timed(result, "sync", lambda: sync.sync(settings))
        _timed(result, "refresh", lambda: refresh.refresh(settings))
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = _timed(result, "export", lambda: export.export_all(settings, output_dir=output_dir, force=True))
    result.exported = list(paths) if isinstance(paths, list) else []
    result.reports = {name: export.fetch(settings, name) for name in export.REPORTS}
    return result


def _timed_start() -> str:
    started = time.perf_counter()
    url = embedded.start("demo")
    log.info("server  embedded PostgreSQL ready in %.2f s (%s)", time.perf_counter() - started, embedded.cache_dir())
    return url
