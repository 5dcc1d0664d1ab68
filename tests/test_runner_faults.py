"""``acme-mv run`` under real faults, on a server of the test's own
(tests/support/throwaway_server.py).

One `run` subprocess (stderr a pipe, ``--log-format json``) goes through: a
source login outage (ALLOW_CONNECTIONS false), the warehouse REFRESH
terminated, the source COPY terminated mid-sync, and a fast shutdown and
restart of the whole server. After each fault: exactly the failures are logged
(one JSON line each, naming the server), the loop goes on, and once the
servers are back the reports equal the truth computed on the source.

Plus: a SIGKILLed ``acme-mv refresh`` whose REFRESH waits on a lock does not
keep holding the refresh lock (client_connection_check_interval), asserted on
pg_stat_activity and pg_locks.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from acme_mv import migrate
from acme_mv.reports.refresh import LOCK_CLASS, LOCK_REFRESH
from acme_mv.sample import load, schema
from tests.support.cli_runner import child_env, run_subprocess
from tests.support.reports_oracle import assert_views_match, expected
from tests.support.throwaway_server import Server, throwaway_server

pytestmark = pytest.mark.slow

#: a lock (rolled back later) that conflicts with the UPDATE of analytics.snapshot that every
#: refresh makes (ROW EXCLUSIVE), not with readers: the refresh waits there until we roll back
BLOCK_REFRESH = "LOCK TABLE analytics.snapshot IN EXCLUSIVE MODE"
#: the refresh's statement that waits behind BLOCK_REFRESH (as pg_stat_activity shows it)
REFRESH_QUERY = "%UPDATE analytics.snapshot%"


#: upper bound for any one wait below; a fault test that passes never gets near it
PATIENCE_S = 120


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with throwaway_server() as srv:
        with srv.admin() as adm:
            adm.execute("CREATE DATABASE src")
            adm.execute("CREATE DATABASE wh")
        with psycopg.connect(srv.url("src")) as conn:
            schema.init(conn)
            load.load(conn, orders=300, days=5, seed=7)
        migrate.upgrade(srv.url("wh"))
        yield srv


class Loop:
    """A running ``acme-mv run`` and the JSON records it wrote to stderr."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.records: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, what: str, test: Callable[[dict[str, Any]], bool], *, after: int = 0) -> int:
        """Read records until one at index >= ``after`` passes ``test``; its index."""
        for i, rec in enumerate(self.records):
            if i >= after and test(rec):
                return i
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"run exited ({self.proc.wait()}) before {what}: {self.raw[-5:]}"
                )
            self.raw.append(line)
            rec = json.loads(line)  # every stderr line is one JSON object
            self.records.append(rec)
            if len(self.records) - 1 >= after and test(rec):
                return len(self.records) - 1
        raise AssertionError(f"no {what} within {PATIENCE_S}s; last lines: {self.raw[-5:]}")

    def next_success(self, *, after: int) -> int:
        return self.wait_for("successful cycle", _is_success, after=after)

    def failures(self, start: int, end: int) -> list[dict[str, Any]]:
        """The failed-cycle records (other warnings, such as a sync waiting for a source lock, are
        not)."""
        return [r for r in self.records[start:end] if _is_failure()(r)]


def _is_success(rec: dict[str, Any]) -> bool:
    return (
        rec["level"] == "INFO"
        and rec["logger"] == "acme_mv.run.loop"
        and rec["message"].startswith("cycle ")
        and ": synced" in rec["message"]
    )


def _is_failure(server: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def test(rec: dict[str, Any]) -> bool:
        return (
            rec["level"] == "WARNING"
            and " failed (" in rec["message"]
            and (server is None or rec.get("server") == server)
        )

    return test


@pytest.fixture
def loop(server: Server) -> Iterator[Loop]:
    env = child_env(ACME_MV_DATABASE_URL=server.url("wh"), ACME_MV_SOURCE_URL=server.url("src"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "acme_mv",
            "--log-format",
            "json",
            "run",
            "--interval",
            "300ms",
            "--max-backoff",
            "1s",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    running = Loop(proc)
    try:
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _backend(
    conn: psycopg.Connection[Any], *, datname: str, application: str, query_like: str
) -> int:
    """The pid of an acme-mv session on ``datname`` waiting for a lock in a statement like
    ``query_like``."""
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s "
            "AND wait_event_type = 'Lock' AND query ILIKE %s",
            (datname, application, query_like),
        ).fetchone()
        if row:
            return int(row[0])
        time.sleep(0.05)
    raise AssertionError(f"no {application} session on {datname} waiting in {query_like}")


def _add_orders(server: Server, n: int, status: str = "PENDING") -> None:
    with psycopg.connect(server.url("src"), autocommit=True) as conn:
        for _ in range(n):
            conn.execute(
                "INSERT INTO operations.orders (order_date, delivery_date, customer_id, status) "
                "VALUES (current_date, current_date + 10, 1, %s)",
                (status,),
            )


def test_run_survives_server_faults_and_converges(server: Server, loop: Loop) -> None:
    first = loop.next_success(after=0)

    # 1. a login outage on the source: its database refuses connections for a while
    _add_orders(server, 3)
    with server.admin() as adm:
        adm.execute("ALTER DATABASE src ALLOW_CONNECTIONS false")
        adm.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'src' "
            "AND pid <> pg_backend_pid()"
        )
        mark = len(loop.records)
        loop.wait_for("source failure", _is_failure("source"), after=mark)
        loop.wait_for("second source failure", _is_failure("source"), after=len(loop.records))
        adm.execute("ALTER DATABASE src ALLOW_CONNECTIONS true")
    back = loop.next_success(after=mark)
    outage = loop.failures(mark, back)
    assert len(outage) >= 2 and all(r["server"] == "source" for r in outage), outage
    # a session terminated by the outage reports the server's reason when its client reads it
    # before the socket closes, else libpq's own words for the closed socket (a busy machine)
    assert all(
        "not currently accepting connections" in r["message"]
        or "terminating connection" in r["message"]
        or "server closed the connection unexpectedly" in r["message"]
        for r in outage
    ), outage

    # 2. the warehouse REFRESH terminated while it runs (it waits on a lock we hold)
    _add_orders(server, 2)
    with psycopg.connect(server.url("wh")) as blocker, server.admin() as adm:
        blocker.execute(BLOCK_REFRESH)
        mark = len(loop.records)
        pid = _backend(adm, datname="wh", application="acme-mv", query_like=REFRESH_QUERY)
        adm.execute("SELECT pg_terminate_backend(%s)", (pid,))
        failure = loop.wait_for("warehouse failure", _is_failure("warehouse"), after=mark)
        blocker.rollback()
    back = loop.next_success(after=failure)
    assert [r["server"] for r in loop.failures(mark, back)] == ["warehouse"]
    assert "terminating connection due to administrator command" in loop.records[failure]["message"]

    # 3. the source session terminated mid-sync, while its COPY of order_items waits on a lock
    _add_orders(server, 2, status="PROCESSING")
    with psycopg.connect(server.url("src")) as blocker, server.admin() as adm:
        blocker.execute("LOCK TABLE operations.order_items IN ACCESS EXCLUSIVE MODE")
        mark = len(loop.records)
        pid = _backend(adm, datname="src", application="acme-mv sync", query_like="%order_items%")
        adm.execute("SELECT pg_terminate_backend(%s)", (pid,))
        failure = loop.wait_for("source failure", _is_failure("source"), after=mark)
        blocker.rollback()
    back = loop.next_success(after=failure)
    assert [r["server"] for r in loop.failures(mark, back)] == ["source"]

    # 4. the whole server shut down (fast) and started again
    _add_orders(server, 4)
    mark = len(loop.records)
    server.stop()
    loop.wait_for("failure while the server is down", _is_failure(), after=mark)
    loop.wait_for("second failure while down", _is_failure(), after=len(loop.records))
    server.start()
    back = loop.next_success(after=mark)
    down = loop.failures(mark, back)
    assert len(down) >= 2 and {r["server"] for r in down} <= {"warehouse", "source"}, down

    # 5. the source backend killed (SIGKILL) mid-COPY: the server drops every session and
    #    recovers; the client sees the connection die under it ("server closed the connection")
    _add_orders(server, 2)
    with psycopg.connect(server.url("src")) as blocker, server.admin() as adm:
        blocker.execute("LOCK TABLE operations.order_items IN ACCESS EXCLUSIVE MODE")
        mark = len(loop.records)
        pid = _backend(adm, datname="src", application="acme-mv sync", query_like="%order_items%")
        os.kill(pid, signal.SIGKILL)
        failure = loop.wait_for("failure after the kill", _is_failure(), after=mark)
        blocker.close()  # its session died with the others: nothing to commit
    back = loop.next_success(after=failure)
    killed = loop.failures(mark, back)
    assert killed[0]["server"] == "source", killed

    # converged: one more change, two more cycles, and the reports are the truth
    _add_orders(server, 1, status="REPROCESSING")
    loop.next_success(after=loop.next_success(after=back + 1) + 1)
    with psycopg.connect(server.url("src")) as src, psycopg.connect(server.url("wh")) as wh:
        assert_views_match(wh, expected(src))

    # every failure was one WARNING record, the loop never exited, and SIGTERM stops it cleanly
    assert loop.proc.poll() is None
    assert all("\n" not in r["message"] for r in loop.records)
    assert first == loop.records.index(next(r for r in loop.records if _is_success(r)))
    loop.proc.send_signal(signal.SIGTERM)
    assert loop.proc.wait(timeout=60) == 0


def test_permanent_failure_exits_with_one_line(server: Server) -> None:
    """A warehouse that is not migrated: retrying cannot fix it, so run exits 1 at once."""
    with server.admin() as adm:
        adm.execute("DROP DATABASE IF EXISTS bare")
        adm.execute("CREATE DATABASE bare")
    done = run_subprocess(
        "run",
        "--database-url",
        server.url("bare"),
        "--source-url",
        server.url("src"),
        env=child_env(),
        timeout=PATIENCE_S,
    )
    assert done.exit_code == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "not migrated" in lines[0], done.stderr


def test_max_failures_against_a_stopped_port() -> None:
    """Nothing listens: each failed cycle is one plain line naming the warehouse; exit 1 after 3."""
    with throwaway_server() as srv:
        url = srv.url("postgres")
        srv.stop()
        done = run_subprocess(
            "run",
            "--max-failures",
            "3",
            "--max-backoff",
            "100ms",
            "--database-url",
            url,
            env=child_env(),
            timeout=PATIENCE_S,
        )
    assert done.exit_code == 1
    lines = done.stderr.splitlines()
    failed = [ln for ln in lines if " WARNING acme_mv.run.loop cycle " in ln]
    assert len(failed) == 2, done.stderr  # the third failure is the final error
    assert all("failed (warehouse): Cannot connect to the warehouse" in ln for ln in failed)
    assert "giving up after 3 failures" in done.stderr
    assert lines[-1].startswith("Error: Cannot connect to the warehouse")


#: sessions holding or awaiting this database's refresh lock (advisory locks are per database;
#: other tests' refreshes on the shared server hold theirs)
REFRESH_LOCK_HOLDERS = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


@pytest.fixture(params=["shared", "pg15"])
def refresh_db(request: pytest.FixtureRequest, db_url: str) -> str:
    """The shared test server's database, or the PostgreSQL 15 throwaway server's warehouse."""
    if request.param == "shared":
        return db_url
    srv: Server = request.getfixturevalue("server")
    url = srv.url("wh2")
    with srv.admin() as adm:
        adm.execute("DROP DATABASE IF EXISTS wh2 WITH (FORCE)")
        adm.execute("CREATE DATABASE wh2")
    with psycopg.connect(url) as conn:
        schema.init(conn)
    migrate.upgrade(url)
    return url


def test_a_killed_refresh_does_not_keep_the_refresh_lock(refresh_db: str) -> None:
    """SIGKILL an `acme-mv refresh` whose REFRESH waits on a lock: the server ends that session
    (client_connection_check_interval) although the lock it waits for is still held, so the
    refresh lock is free for the next refresh."""
    with psycopg.connect(refresh_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
            "('2026-12-11', 1, 'PENDING')"
        )
    env = child_env(ACME_MV_DATABASE_URL=refresh_db)
    first = subprocess.run(
        [sys.executable, "-m", "acme_mv", "refresh"],
        env=env,
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
    )
    assert first.returncode == 0, first.stderr
    dbname = psycopg.conninfo.conninfo_to_dict(refresh_db)["dbname"]
    with (
        psycopg.connect(refresh_db) as blocker,
        psycopg.connect(refresh_db, autocommit=True) as watcher,
    ):
        blocker.execute(BLOCK_REFRESH)
        proc = subprocess.Popen(
            [sys.executable, "-m", "acme_mv", "refresh"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            pid = _backend(
                watcher, datname=str(dbname), application="acme-mv", query_like=REFRESH_QUERY
            )
            holder = watcher.execute(
                REFRESH_LOCK_HOLDERS + " AND granted", (LOCK_CLASS, LOCK_REFRESH)
            ).fetchone()
            assert holder == (pid,)  # the waiting REFRESH's session holds the refresh lock
        finally:
            proc.kill()
            proc.wait()
        # the blocker still holds its lock: only the dead-client check can end that session
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline:
            alive = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            if alive == (0,):
                break
            time.sleep(0.1)
        assert watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone() == (0,)
        assert watcher.execute(REFRESH_LOCK_HOLDERS, (LOCK_CLASS, LOCK_REFRESH)).fetchall() == []
        got = watcher.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, LOCK_REFRESH)
        ).fetchone()
        assert got == (True,)  # the next refresh gets the lock at once
        watcher.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, LOCK_REFRESH))
        blocker.rollback()
