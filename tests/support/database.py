"""A real PostgreSQL under every test.

Where the server comes from, in order:
1. ``ACME_MV_TEST_DATABASE_URL`` (a role that may CREATE DATABASE);
2. testcontainers' PostgreSQL when a Docker engine answers;
3. the embedded PostgreSQL wheel, started once per test session and shared by
   the pytest-xdist workers (its data directory is locked and reference-counted).

Each test gets fresh databases cloned from template databases (``CREATE
DATABASE ... TEMPLATE``), so tests share no state and run in parallel. The
templates are keyed by a hash of the migrations and the sample schema, so a
changed migration never reuses a stale template.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

ROOT = Path(__file__).resolve().parents[2]
TEST_URL_ENV = "ACME_MV_TEST_DATABASE_URL"


def _docker_answers() -> bool:
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


#: change capture tests need a real slot: logical WAL and room for parallel tests' slots
LOGICAL_REPLICATION_COMMAND = (
    "postgres -c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20"
)


def _require_logical(url: str) -> None:
    """Fail (never skip) when the given server cannot host the change capture tests."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_setting('wal_level')").fetchone()
    if row is None or row[0] != "logical":
        pytest.fail(
            f"{TEST_URL_ENV} points at a server with wal_level={row[0] if row else '?'}; the "
            "change capture tests need wal_level=logical (ALTER SYSTEM SET "
            "wal_level = logical; restart it)",
            pytrace=False,
        )


def _start_server() -> tuple[str, Callable[[], None]]:
    url = os.environ.get(TEST_URL_ENV)
    if url:
        _require_logical(url)
        return url, lambda: None
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16", driver=None).with_command(
            LOGICAL_REPLICATION_COMMAND
        )
        container.start()
        return container.get_connection_url(), container.stop
    from acme_mv import embedded

    pgdata = Path(
        os.environ.get("ACME_MV_TEST_PGDATA", str(embedded.cache_dir() / "postgres-tests"))
    )
    return embedded.start("tests", pgdata=pgdata), lambda: None


def with_db(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """Admin URL of the test server (its maintenance database)."""
    url, stop = _start_server()
    try:
        yield url
    finally:
        stop()


def _fingerprint() -> str:
    h = hashlib.sha256()
    for path in sorted((ROOT / "migrations").rglob("*")) + sorted(
        (ROOT / "acme_mv" / "sample").glob("*.sql")
    ):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(path.relative_to(ROOT).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


#: advisory lock key that serializes template creation across xdist workers
TEMPLATE_LOCK = 0x61636D65


@contextmanager
def server_lock(server: str) -> Iterator[psycopg.Connection[TupleRow]]:
    """An autocommit admin connection holding :data:`TEMPLATE_LOCK`: one xdist worker at a time
    changes what the tests share on the server (templates, roles, pg_hba.conf)."""
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (TEMPLATE_LOCK,))
        try:
            yield conn
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (TEMPLATE_LOCK,))


def _ensure_template(server: str, name: str, build: Callable[[str], None]) -> str:
    with server_lock(server) as conn:
        row = conn.execute(
            "SELECT datistemplate FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if row is None or not row[0]:
            if row is not None:  # a half-built template from a crashed run
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            build(with_db(server, name))
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                    sql.Identifier(name)
                )
            )
    return name


def _build_source(url: str) -> None:
    from acme_mv.sample import schema

    with psycopg.connect(url) as conn:
        schema.init(conn)


def _build_warehouse(url: str) -> None:
    from acme_mv import migrate

    migrate.upgrade(url)


def _build_both(url: str) -> None:
    _build_source(url)
    _build_warehouse(url)


TEMPLATES: dict[str, Callable[[str], None]] = {
    "empty": lambda url: None,
    "source": _build_source,
    "warehouse": _build_warehouse,
    "both": _build_both,
}


@pytest.fixture(scope="session")
def templates(server_url: str) -> dict[str, str]:
    fp = _fingerprint()
    return {
        kind: _ensure_template(server_url, f"acme_tpl_{kind}_{fp}", build)
        for kind, build in TEMPLATES.items()
    }


DatabaseFactory = Callable[[str], str]


@pytest.fixture
def make_db(server_url: str, templates: dict[str, str]) -> Iterator[DatabaseFactory]:
    """Factory: ``make_db(kind)`` -> URL of a new database cloned from a template.

    Kinds: ``empty``, ``source`` (sample ``operations`` schema, no rows),
    ``warehouse`` (migrated to head), ``both`` (the one-database deployment).
    """
    created: list[str] = []

    def make(kind: str = "both") -> str:
        name = f"acme_t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(templates[kind])
                )
            )
        created.append(name)
        return with_db(server_url, name)

    yield make
    with psycopg.connect(server_url, autocommit=True) as conn:
        for name in created:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# one fixture per template kind, alike on purpose (docs/duplicates.md): a test asks for its
# databases by name


@pytest.fixture
def db_url(make_db: DatabaseFactory) -> str:
    """One database holding the sample source schema and the migrated warehouse."""
    return make_db("both")


@pytest.fixture
def source_url(make_db: DatabaseFactory) -> str:
    """A separate source database with the sample ``operations`` schema (no rows)."""
    return make_db("source")


@pytest.fixture
def warehouse_url(make_db: DatabaseFactory) -> str:
    """A separate warehouse database, migrated to head."""
    return make_db("warehouse")


@pytest.fixture
def empty_url(make_db: DatabaseFactory) -> str:
    return make_db("empty")
