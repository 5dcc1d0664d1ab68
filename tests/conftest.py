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
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
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
            f"{TEST_URL_ENV} points at a server with wal_level={row[0] if row else '?'}; the change capture "
            "tests need wal_level=logical (ALTER SYSTEM SET wal_level = logical; restart it)",
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


def _ensure_template(server: str, name: str, build: Callable[[str], None]) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (TEMPLATE_LOCK,))
        try:
            row = conn.execute(
                "SELECT datistemplate FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if row is None or not row[0]:
                if row is not None:  # a half-built template from a crashed run
                    conn.execute(
                        sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
                    )
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                build(with_db(server, name))
                conn.execute(
                    sql.SQL(
                        "ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
                    ).format(sql.Identifier(name))
                )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (TEMPLATE_LOCK,))
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


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Point the CLI's environment at given URLs (and clear stray settings)."""

    def point(*, database_url: str | None = None, source_url: str | None = None) -> None:
        for var in ("ACME_MV_DATABASE_URL", "ACME_MV_SOURCE_URL", "ACME_MV_TIMEZONE"):
            monkeypatch.delenv(var, raising=False)
        if database_url is not None:
            monkeypatch.setenv("ACME_MV_DATABASE_URL", database_url)
        if source_url is not None:
            monkeypatch.setenv("ACME_MV_SOURCE_URL", source_url)

    return point


#: members of this group log in with a password (scram-sha-256), even on the
#: embedded server, which trusts everyone else: see :func:`require_passwords`
PASSWORD_GROUP = "acme_password_required"
PASSWORD_ROLE = "acme_pw_role"
PASSWORD = "correct-horse-battery"
#: waiting for a pg_hba.conf reload to take effect: polls of 0.1 s
HBA_POLLS = 50


def require_passwords(server: str, *roles: str) -> None:
    """Make ``roles`` log in with their password on the test server.

    They join :data:`PASSWORD_GROUP`; on the embedded server (trust auth by
    default) pg_hba.conf gets, first, a scram-sha-256 line for the group's
    members over the socket and TCP (a server that already asks for passwords
    needs none). Returns once a login without the password is refused.
    """
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (TEMPLATE_LOCK,))
        try:
            if not conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (PASSWORD_GROUP,)
            ).fetchone():
                conn.execute(
                    sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(PASSWORD_GROUP))
                )
            for role in roles:
                conn.execute(
                    sql.SQL("GRANT {} TO {}").format(
                        sql.Identifier(PASSWORD_GROUP), sql.Identifier(role)
                    )
                )
            hba_row = conn.execute("SELECT current_setting('hba_file')").fetchone()
            assert hba_row is not None
            hba = Path(str(hba_row[0]))
            line = f"local all +{PASSWORD_GROUP} scram-sha-256\nhost all +{PASSWORD_GROUP} all scram-sha-256\n"
            if hba.exists() and os.access(hba, os.W_OK) and line not in hba.read_text():
                hba.write_text(line + hba.read_text())
                conn.execute("SELECT pg_reload_conf()")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (TEMPLATE_LOCK,))
    for role in roles:  # pg_reload_conf() only signals the postmaster
        for _ in range(HBA_POLLS):
            try:
                psycopg.connect(
                    make_conninfo(server, user=role, password=""), connect_timeout=5
                ).close()
            except psycopg.OperationalError:
                break
            time.sleep(0.1)


@dataclass(frozen=True)
class LoginRole:
    """A role that logs in with a password (made by the ``make_role`` fixture)."""

    name: str
    password: str

    def url(self, base: str) -> str:
        """``base`` (any test database URL) as this role, with its password."""
        return make_conninfo(base, user=self.name, password=self.password)


def drop_role(server: str, role: str) -> None:
    """Drop ``role`` and whatever it owns or was granted, in every database of the server."""
    with psycopg.connect(server, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT DISTINCT d.datname FROM pg_shdepend AS s JOIN pg_database AS d ON d.oid = s.dbid "
            "JOIN pg_roles AS r ON r.oid = s.refobjid WHERE r.rolname = %s",
            (role,),
        ).fetchall()
        for (dbname,) in rows:
            with psycopg.connect(with_db(server, str(dbname)), autocommit=True) as db:
                db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


RoleFactory = Callable[[str], LoginRole]


@pytest.fixture
def make_role(server_url: str) -> Iterator[RoleFactory]:
    """Factory: ``make_role(prefix)`` -> a new non-superuser LOGIN role with a password, dropped afterwards."""
    created: list[str] = []

    def make(prefix: str) -> LoginRole:
        role = LoginRole(name=f"{prefix}_{uuid.uuid4().hex[:8]}", password=uuid.uuid4().hex)
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role.name), sql.Literal(role.password)
                )
            )
        created.append(role.name)
        require_passwords(server_url, role.name)
        return role

    yield make
    for name in created:
        drop_role(server_url, name)


@pytest.fixture(scope="session")
def password_role_url(server_url: str) -> str:
    """URL of a role that must log in with a password (for wrong-password tests)."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (TEMPLATE_LOCK,))
        try:
            exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (PASSWORD_ROLE,)
            ).fetchone()
            if not exists:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(PASSWORD_ROLE), sql.Literal(PASSWORD)
                    )
                )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (TEMPLATE_LOCK,))
    require_passwords(server_url, PASSWORD_ROLE)
    return make_conninfo(server_url, user=PASSWORD_ROLE, password=PASSWORD)


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
