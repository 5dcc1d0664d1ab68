"""The replication-protocol connection to the source (psycopg2; psycopg 3 has none).

psycopg 3 does not speak the streaming replication protocol (psycopg issue
71). psycopg2's ``LogicalReplicationConnection`` does: it runs
``CREATE_REPLICATION_SLOT`` / ``START_REPLICATION``, answers the server's
keepalives, and sends standby status updates (``send_feedback``). It is
used for that connection only; everything else stays on psycopg 3.
"""

from __future__ import annotations

from typing import Any

import psycopg.conninfo

from acme_mv.config import describe_target, scrub
from acme_mv.db import CONNECT_TIMEOUT_S, first_line
from acme_mv.errors import ConnectionFailed

#: application_name of change capture's sessions on the source
APPLICATION_NAME = "acme-mv cdc"

#: the walsender prints dates in its DateStyle; ISO is what the warehouse's COPY reads
_DATESTYLE = "-c DateStyle=ISO,YMD"


def replication_conninfo(url: str) -> str:
    """``url`` with our application name and an ISO DateStyle (the user's other options kept)."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    options = str(params.get("options") or "")
    return psycopg.conninfo.make_conninfo(
        url,
        application_name=APPLICATION_NAME,
        connect_timeout=str(CONNECT_TIMEOUT_S),
        options=f"{options} {_DATESTYLE}".strip(),
    )


def connect(url: str) -> Any:
    """A psycopg2 logical replication connection to the source, or :class:`ConnectionFailed`.

    Typed ``Any``: psycopg2 ships no type information.
    """
    import psycopg2
    import psycopg2.extras

    try:
        return psycopg2.connect(
            replication_conninfo(url),
            connection_factory=psycopg2.extras.LogicalReplicationConnection,
        )
    except psycopg2.Error as exc:
        reason = scrub(first_line(exc), url)
        hint = ""
        if "replication" in reason:
            hint = (
                " (change capture needs a role with REPLICATION and "
                "a pg_hba.conf line for replication connections)"
            )
        raise ConnectionFailed(
            "Cannot open a replication connection to the "
            f"source ({describe_target(url)}): {reason}{hint}",
            role="source",
        ) from None


def errors() -> tuple[type[BaseException], ...]:
    """psycopg2's error base, for ``except`` clauses
    that must not import psycopg2 at module load."""
    import psycopg2

    return (psycopg2.Error,)


def lost_connection_errors() -> tuple[type[BaseException], ...]:
    """What a dropped replication connection raises (source restart, walsender terminated)."""
    import psycopg2

    return (psycopg2.OperationalError, psycopg2.InterfaceError)


def is_lost(exc: BaseException, conn: Any) -> bool:
    """Whether ``exc`` means the replication connection is gone: psycopg2 raises a bare
    ``DatabaseError`` ("... PGRES_COPY_BOTH and no message from the libpq") instead of an
    ``OperationalError`` when the walsender went away while another thread (the keepalive
    beside a long apply) used the connection."""
    return bool(getattr(conn, "closed", 0)) or "no message from the libpq" in str(exc)


def lost(exc: BaseException) -> BaseException:
    """The error a lost replication connection raises (the stream reconnects on it)."""
    import psycopg2

    error: BaseException = psycopg2.OperationalError(describe(exc))
    return error


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
