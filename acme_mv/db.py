"""Connections to the warehouse and the source, with one-line failures.

Every connection carries ``application_name=acme-mv`` so that it can be told
apart in ``pg_stat_activity`` (the sync uses that to ignore its own sessions).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import psycopg
from psycopg import sql

from acme_mv.config import describe_target, scrub
from acme_mv.errors import ConnectionFailed

Role = Literal["warehouse", "source"]

APPLICATION_NAME = "acme-mv"
#: seconds to wait for a server before giving up; long enough for a busy
#: server, short enough that a wrong host fails while the user still waits
CONNECT_TIMEOUT_S = 10


def first_line(exc: BaseException) -> str:
    """An exception's message on one line.

    libpq splits a message over lines ("connection failed:" then the reason,
    then a hint); the pieces are joined so the reason is never cut off.
    """
    parts = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not parts:
        return type(exc).__name__
    text = " ".join(parts)
    return text.replace(": :", ":").replace("failed: connection", "failed; connection")


def connect(url: str, *, role: Role, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    """Open a connection or raise :class:`ConnectionFailed` naming the target."""
    try:
        conn = psycopg.connect(
            url,
            autocommit=autocommit,
            application_name=APPLICATION_NAME,
            connect_timeout=CONNECT_TIMEOUT_S,
        )
    except psycopg.Error as exc:
        reason = scrub(first_line(exc), url)
        raise ConnectionFailed(f"Cannot connect to the {role} ({describe_target(url)}): {reason}") from None
    return conn


@contextmanager
def connection(url: str, *, role: Role, autocommit: bool = False) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """``connect`` as a context manager that always closes."""
    conn = connect(url, role=role, autocommit=autocommit)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def schema_exists(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (schema,)).fetchone()
    return bool(row and row[0])


def relation_exists(conn: psycopg.Connection[tuple[object, ...]], schema: str, name: str) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL",
        (sql.Identifier(schema, name).as_string(conn),),
    ).fetchone()
    return bool(row and row[0])


def ensure_database(server: psycopg.Connection[tuple[object, ...]], name: str, *, recreate: bool = False) -> None:
    """Create database ``name`` unless it exists; ``recreate`` drops it first.

    ``server`` must be in autocommit mode (CREATE DATABASE cannot run in a transaction).
    """
    exists = server.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists and recreate:
        server.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        exists = None
    if not exists:
        server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
