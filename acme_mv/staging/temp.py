"""A batch's scratch tables: temp tables of the warehouse session, emptied by every commit.

The tables a batch fills and reads before its commit (change capture's incoming rows, the
batch's changes before and after: :mod:`acme_mv.cdc.write`, :mod:`acme_mv.staging.apply`)
are created by the session's first batch ``ON COMMIT DELETE ROWS`` and reused by every later
one. Creating and dropping them in each batch would write the catalogs (``pg_class``,
``pg_attribute``, ``pg_type``, ``pg_depend``) twice a table and throw away the plans of every
statement that reads them; at a few hundred rows a batch that costs more than the rows. A
batch is one transaction, so each finds them empty; a transaction that created one and
rolled back took it along, and the next batch creates it again.
"""

from __future__ import annotations

from psycopg import sql
from psycopg.abc import Params

from acme_mv.db import Conn


def ensure(
    conn: Conn, name: str, select: sql.Composable, params: Params | None = None
) -> sql.Identifier:
    """Temp table ``name`` with the columns of ``select`` (run with ``params``, no row kept),
    created unless this session has it; returns its name."""
    temp = sql.Identifier(name)
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS {} WITH NO DATA"
        ).format(temp, select),
        params,
    )
    return temp
