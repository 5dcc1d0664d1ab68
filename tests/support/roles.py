"""Login roles with passwords on the test server (grants, production setup, wrong passwords)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.support.database import server_lock, with_db

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
    with server_lock(server) as conn:
        if not conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (PASSWORD_GROUP,)
        ).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(PASSWORD_GROUP)))
        for role in roles:
            conn.execute(
                sql.SQL("GRANT {} TO {}").format(
                    sql.Identifier(PASSWORD_GROUP), sql.Identifier(role)
                )
            )
        hba_row = conn.execute("SELECT current_setting('hba_file')").fetchone()
        assert hba_row is not None
        hba = Path(str(hba_row[0]))
        line = (
            f"local all +{PASSWORD_GROUP} scram-sha-256\n"
            f"host all +{PASSWORD_GROUP} all scram-sha-256\n"
        )
        if hba.exists() and os.access(hba, os.W_OK) and line not in hba.read_text():
            hba.write_text(line + hba.read_text())
            conn.execute("SELECT pg_reload_conf()")
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
            "SELECT DISTINCT d.datname FROM pg_shdepend AS s JOIN pg_database AS d ON d.oid = "
            "s.dbid JOIN pg_roles AS r ON r.oid = s.refobjid WHERE r.rolname = %s",
            (role,),
        ).fetchall()
        for (dbname,) in rows:
            with psycopg.connect(with_db(server, str(dbname)), autocommit=True) as db:
                db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


RoleFactory = Callable[[str], LoginRole]


@pytest.fixture
def make_role(server_url: str) -> Iterator[RoleFactory]:
    """Factory: ``make_role(prefix)`` -> a new non-superuser LOGIN role with a password, dropped
    afterwards."""
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
    with server_lock(server_url) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (PASSWORD_ROLE,)
        ).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(PASSWORD_ROLE), sql.Literal(PASSWORD)
                )
            )
    require_passwords(server_url, PASSWORD_ROLE)
    return make_conninfo(server_url, user=PASSWORD_ROLE, password=PASSWORD)
