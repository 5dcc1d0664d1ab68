"""Connections to the warehouse and the source, with one-line failures that name the server.

Every connection carries ``application_name=acme-mv`` so that it can be told
apart in ``pg_stat_activity`` (the sync uses that to ignore its own sessions),
TCP keepalives, and (PostgreSQL 14+) ``client_connection_check_interval`` so
that a statement whose client died (killed, host gone) is cancelled by the
server instead of running on, holding its locks.

Errors raised while a :func:`connection` is in use are turned into
:class:`~acme_mv.errors.ServerError` subclasses carrying ``role`` (which
server) when they come from that connection: :class:`ConnectionLost` (a
session ended or the server refused to go on: shutdown, terminate, network
cut, serialization failure, deadlock) and :class:`PermissionDenied` (naming
the missing grant). Other SQL errors pass through unchanged.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar, cast

import psycopg
from psycopg import sql
from psycopg.abc import Buffer, Params, Query
from psycopg.rows import scalar_row
from psycopg.types.datetime import TimestampLoader, TimestamptzLoader

from acme_mv.config import describe_target, scrub
from acme_mv.errors import (
    AcmeMvError,
    AuthenticationFailed,
    ConnectionFailed,
    ConnectionLost,
    PermissionDenied,
)

log = logging.getLogger(__name__)

Role = Literal["warehouse", "source"]

APPLICATION_NAME = "acme-mv"
#: seconds to wait for a server before giving up; long enough for a busy
#: server, short enough that a wrong host fails while the user still waits
CONNECT_TIMEOUT_S = 10
#: TCP keepalives (libpq parameters): a peer that vanished without closing the
#: connection (host down, network cut) is noticed after about
#: idle + interval * count = 60 s instead of the kernel's default two hours.
#: A URL that sets any of them wins.
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}
#: how often the server checks, while a statement runs, that acme-mv is still
#: connected (PostgreSQL 14+, a user-settable GUC). A killed ``acme-mv refresh``
#: would otherwise leave its REFRESH running, holding the refresh lock, until
#: the statement ends; with it the server cancels the statement within this time.
CLIENT_CHECK_INTERVAL = "2s"
#: first server version (``server_version_num``) that knows the setting
CLIENT_CHECK_MIN_VERSION = 140000

Conn = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")


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


def connect(url: str, *, role: Role, autocommit: bool = False) -> Conn:
    """Open a connection or raise :class:`ConnectionFailed` naming the target."""
    try:
        given = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        given = {}
    defaults = {k: v for k, v in KEEPALIVES.items() if k not in given}
    try:
        conn = psycopg.connect(
            psycopg.conninfo.make_conninfo(url, **defaults),
            autocommit=autocommit,
            application_name=APPLICATION_NAME,
            connect_timeout=CONNECT_TIMEOUT_S,
        )
    except psycopg.Error as exc:
        raise connection_failed(exc, role=role, url=url) from None
    try:
        _watch_client(conn, given)
    except psycopg.Error as exc:
        conn.close()
        raise server_error(exc, role=role, url=url, user=None) or exc from None
    conn.cursor_factory = TaggedCursor
    if log.isEnabledFor(logging.DEBUG):
        log.debug("connected to the %s (%s) as %s", role, describe_target(url), conn.info.user)
    return conn


def _watch_client(conn: Conn, given: dict[str, Any]) -> None:
    """Set ``client_connection_check_interval`` unless
    the server is older or the URL's options set it."""
    if conn.info.server_version < CLIENT_CHECK_MIN_VERSION:
        return
    if "client_connection_check_interval" in str(given.get("options") or ""):
        return
    conn.execute(
        "SELECT set_config('client_connection_check_interval', %s, false)", (CLIENT_CHECK_INTERVAL,)
    )
    if not conn.autocommit:
        conn.commit()  # a session setting made in a transaction is undone by its rollback


#: libpq messages (in English, the default lc_messages) of a login the server
#: refused on purpose: waiting does not change a password or pg_hba.conf
_AUTH_FAILED = re.compile(
    r"password authentication failed|authentication failed for user|no pg_hba\.conf entry|"
    r"pg_hba\.conf rejects|role \S+ does not exist|no password supplied|"
    r"(?:peer|ident|certificate|SCRAM) authentication",
    re.I,
)
_AUTH_SQLSTATES = {"28P01", "28000"}


#: libpq's words for a failed connection -> how to fix it ({url}: the option naming the URL)
_CONNECTION_FIXES = (
    (
        re.compile(r'socket "[^"]*" failed: No such file or directory'),
        "no PostgreSQL server listens on that local socket: set {url} to the server's URL "
        "(the server of `make demo` is embedded and stops with it: `acme-mv demo --serve` "
        "keeps it running with the dashboard)",
    ),
    (
        re.compile(r"password authentication failed|no password supplied|role \S+ does not exist"),
        "check the user name and the password in {url} (or PGPASSWORD, ~/.pgpass)",
    ),
    (
        re.compile(r"no pg_hba\.conf entry|pg_hba\.conf rejects"),
        "the server's pg_hba.conf refuses this user, database or address: "
        "ask its administrator for an entry",
    ),
    (
        re.compile(r"database \S+ does not exist"),
        "create the database (createdb NAME) or fix the database name in {url}",
    ),
    (
        re.compile(r"failed to resolve host|could not translate host name"),
        "check the host name in {url}",
    ),
    (
        re.compile(r"Connection refused|timeout expired|No route to host"),
        "is the server running, and are the host and port in {url} right?",
    ),
    (
        re.compile(r"permission denied for database"),
        "grant the user CONNECT on the database (GRANT CONNECT ON DATABASE ... TO ...)",
    ),
)
_URL_OPTION = {
    "warehouse": "--database-url (ACME_MV_DATABASE_URL)",
    "source": "--source-url (ACME_MV_SOURCE_URL)",
}


def connection_fix(text: str, role: Role) -> str | None:
    """How to fix the failed connection libpq describes in ``text`` (pure), or None."""
    for pattern, fix in _CONNECTION_FIXES:
        if pattern.search(text):
            return fix.format(url=_URL_OPTION[role])
    return None


@contextmanager
def staging_only(what: str, instead: str) -> Iterator[None]:
    """Turn a missing privilege on the schema ``staging`` into one plain line: ``what`` reads
    staging, which a report reader (``acme-mv grant-reader``) is never granted; ``instead`` says
    what to do. Readers get the reports, never staging's rows (docs/deploy-cursor-sync.md,
    "Roles")."""
    try:
        yield
    except (psycopg.errors.InsufficientPrivilege, PermissionDenied) as exc:
        if not re.search(r"\bfor schema staging\b|\bstaging\.", str(exc)):
            raise
        raise PermissionDenied(
            f"{what} reads the staged data (schema staging), which a report reader may not "
            f"read: {instead}",
            role="warehouse",
            privilege="USAGE",
            object="staging",
            sqlstate=exc.sqlstate,
        ) from None


def connection_failed(exc: psycopg.Error, *, role: Role, url: str) -> ConnectionFailed:
    """The one-line error for a login that failed, with how to fix it when libpq's words tell;
    an authentication refusal is not transient."""
    reason = scrub(first_line(exc), url)
    fix = connection_fix(str(exc), role)
    reason = reason.rstrip(".") + (f"; {fix}" if fix else "")
    message = f"Cannot connect to the {role} ({describe_target(url)}): {reason}"
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate in _AUTH_SQLSTATES or _AUTH_FAILED.search(str(exc)):
        return AuthenticationFailed(message, role=role, sqlstate=sqlstate)
    return ConnectionFailed(message, role=role, sqlstate=sqlstate)


_DENIED = re.compile(
    r"permission denied for "
    r"(?P<kind>materialized view|foreign table|table|view|sequence|schema|function|"
    r"procedure|database|large object|type) (?P<name>\S+)"
)
_NOT_OWNER = re.compile(
    r"must be owner of "
    r"(?P<kind>materialized view|foreign table|table|view|sequence|schema|function|"
    r"procedure|database|type|relation) (?P<name>\S+)"
)
#: the privilege each kind of object needs when the statement does not tell
_PRIVILEGE = {
    "schema": "USAGE",
    "sequence": "USAGE",
    "database": "CONNECT",
    "function": "EXECUTE",
    "procedure": "EXECUTE",
    "type": "USAGE",
    "large object": "SELECT",
}
#: statement verbs that write the object right after them
_WRITES = re.compile(
    r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE(?:\s+TABLE)?|COPY)"
    r"\s+(?:ONLY\s+)?(?P<target>[\w.\"]+)"
    r"(?P<rest>.*)$",
    re.I | re.S,
)


def privilege_needed(kind: str, obj: str, statement: str) -> str:
    """The privilege a statement needed on ``obj`` (pure): the write verb when ``obj`` is its
    target (``COPY t FROM`` is an INSERT), USAGE/CREATE on a schema the statement creates in,
    else SELECT for a relation, or the kind's usual privilege."""
    if kind in ("table", "view", "materialized view", "foreign table", "relation"):
        m = _WRITES.match(statement)
        if m and m["target"].replace('"', "").split(".")[-1] == obj.split(".")[-1]:
            verb = statement.split(None, 1)[0].upper()
            if verb == "COPY":
                return "INSERT" if re.search(r"\bFROM\s+STDIN\b", m["rest"], re.I) else "SELECT"
            return verb
        return "SELECT"
    if kind == "schema" and re.match(r"^\s*CREATE\b", statement, re.I):
        return "CREATE"
    return _PRIVILEGE.get(kind, "USAGE")


def permission_denied(
    exc: psycopg.Error, *, role: Role, url: str, user: str | None
) -> PermissionDenied:
    """One line naming the object, the privilege it needs and the GRANT that gives it."""
    reason = scrub(first_line(exc), url)
    who = user or "acme-mv's role"
    where = f"the {role} ({describe_target(url)})"
    sqlstate = getattr(exc, "sqlstate", None)
    if (m := _NOT_OWNER.search(reason)) is not None:
        obj = m["name"].strip('"')
        return PermissionDenied(
            f"Permission denied on {where}: {reason}. Run "
            f"this step as the owner of {m['kind']} {obj} "
            f"(the role that ran `acme-mv migrate`), or make {who} a member of it",
            role=role,
            privilege="OWNER",
            object=obj,
            sqlstate=sqlstate,
        )
    if (m := _DENIED.search(reason)) is not None:
        kind = m["kind"]
        obj = m["name"].strip('"')
        if (
            role == "source"
            and kind in ("table", "view", "materialized view", "foreign table")
            and "." not in obj
        ):
            obj = f"operations.{obj}"
        privilege = privilege_needed(kind, obj, str(getattr(exc, _STATEMENT, "")))
        on = {"materialized view": "TABLE", "view": "TABLE", "foreign table": "TABLE"}.get(
            kind, kind.upper()
        )
        return PermissionDenied(
            f"Permission denied on {where}: {reason}; {who} "
            f"needs: GRANT {privilege} ON {on} {obj} TO {who}",
            role=role,
            privilege=privilege,
            object=obj,
            sqlstate=sqlstate,
        )
    return PermissionDenied(
        f"Permission denied on {where} for {who}: {reason}",
        role=role,
        privilege="",
        object="",
        sqlstate=sqlstate,
    )


#: SQLSTATE classes of errors about the data a statement reads or writes, not about the server:
#: data exception, integrity constraint violation, program limit exceeded (an index entry too
#: large). Retrying the same statement on the same data fails the same way.
DATA_ERROR_CLASSES = frozenset({"22", "23", "54"})


def is_data_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a server's error about the data (:data:`DATA_ERROR_CLASSES`)."""
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, psycopg.Error) and state[:2] in DATA_ERROR_CLASSES


def server_error(
    exc: psycopg.Error, *, role: Role, url: str, user: str | None, broken: bool = False
) -> AcmeMvError | None:
    """The acme-mv error for a psycopg error of a connection to ``role``, or None to let it pass.

    ``broken``: the connection is gone, whatever the error's class (a COPY cut by a server
    crash surfaces as a bare ``DatabaseError`` "server closed the connection unexpectedly").
    """
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return permission_denied(exc, role=role, url=url, user=user)
    if (isinstance(exc, psycopg.OperationalError) and not is_data_error(exc)) or broken:
        # the server's primary message, without the statement excerpt ("LINE 1: ...") of a detail
        reason = exc.diag.message_primary or first_line(exc)
        return ConnectionLost(
            f"The {role} ({describe_target(url)}) failed: "
            f"{scrub(first_line(Exception(reason)), url)}",
            role=role,
            sqlstate=getattr(exc, "sqlstate", None),
        )
    return None


#: attributes set on a psycopg error by :class:`TaggedCursor`: the connection it came
#: from, and the statement (shortened) that raised it
_TAG = "acme_mv_pgconn"
_STATEMENT = "acme_mv_statement"


def _raised_by(exc: psycopg.Error, conn: Conn) -> bool:
    """Whether ``exc`` came from ``conn`` (and not from another connection used in the same block).

    A broken connection claims the error (a lost session breaks only its own
    connection); otherwise the tag :class:`TaggedCursor` put on it decides. An
    untagged error of a healthy connection (raised inside a COPY) is left alone.
    """
    if conn.broken:
        return True
    return getattr(exc, _TAG, None) is conn.pgconn


@contextmanager
def connection(url: str, *, role: Role, autocommit: bool = False) -> Iterator[Conn]:
    """``connect`` as a context manager that always
    closes; errors of this connection name ``role``."""
    conn = connect(url, role=role, autocommit=autocommit)
    user = conn.info.user
    committing = False
    try:
        with conn:
            yield conn
            committing = True  # an error from here on is the commit's: this connection's
    except psycopg.Error as exc:
        if not (committing or _raised_by(exc, conn)):
            raise
        wrapped = server_error(exc, role=role, url=url, user=user, broken=conn.broken)
        if wrapped is None:
            raise
        raise wrapped from exc
    finally:
        conn.close()


def tag_error(exc: psycopg.Error, conn: Conn, statement: str = "") -> psycopg.Error:
    """Mark ``exc`` as raised by ``conn`` (for code that talks to libpq directly); returns it."""
    if not hasattr(exc, _TAG):
        setattr(exc, _TAG, conn.pgconn)
        setattr(exc, _STATEMENT, statement)
    return exc


#: how ``timestamp 'infinity'`` / ``'-infinity'`` load on a connection given to
#: :func:`load_infinity` (Python's datetime has no infinity: its largest and smallest values)
INFINITY = dt.datetime.max
MINUS_INFINITY = dt.datetime.min


class _TimestampLoader(TimestampLoader):
    def load(self, data: Buffer) -> dt.datetime:
        if bytes(data) == b"infinity":
            return INFINITY
        if bytes(data) == b"-infinity":
            return MINUS_INFINITY
        return super().load(data)


class _TimestamptzLoader(TimestamptzLoader):
    def load(self, data: Buffer) -> dt.datetime:
        if bytes(data) == b"infinity":
            return INFINITY.replace(tzinfo=dt.UTC)
        if bytes(data) == b"-infinity":
            return MINUS_INFINITY.replace(tzinfo=dt.UTC)
        return super().load(data)


def load_infinity(conn: Conn | psycopg.Cursor[Any]) -> None:
    """Load ``'infinity'`` / ``'-infinity'`` timestamps on ``conn`` as :data:`INFINITY` /
    :data:`MINUS_INFINITY` (tz-aware for timestamptz) instead of failing with "timestamp too
    large": a source row may carry one, and what only shows values must not fail on it."""
    conn.adapters.register_loader("timestamp", _TimestampLoader)
    conn.adapters.register_loader("timestamptz", _TimestamptzLoader)


def is_infinite(value: dt.datetime | None) -> bool:
    """Whether ``value`` is how :func:`load_infinity` loads an infinite timestamp."""
    return value is not None and value.replace(tzinfo=None) in (INFINITY, MINUS_INFINITY)


def show_timestamp(value: dt.datetime, *, sep: str = "T", timespec: str = "auto") -> str:
    """ISO 8601, or ``infinity`` / ``-infinity``."""
    if is_infinite(value):
        return "infinity" if value.replace(tzinfo=None) == INFINITY else "-infinity"
    return value.isoformat(sep=sep, timespec=timespec)


def failed_statement(exc: BaseException) -> str:
    """The statement (shortened) that raised ``exc``, when a :class:`TaggedCursor` or
    :func:`tag_error` recorded it; "" otherwise."""
    return str(getattr(exc, _STATEMENT, ""))


class TaggedCursor(psycopg.Cursor[Any]):
    """A cursor that marks the errors of its statements with their connection and statement
    (to name the server and the privilege), and logs each statement's duration at DEBUG
    (``acme-mv -v``), never its parameters."""

    def _tag(self, exc: psycopg.Error, query: Query) -> None:
        tag_error(exc, self.connection, _one_line(query, self))

    def execute(
        self,
        query: Query,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> TaggedCursor:
        t0 = time.perf_counter()
        try:
            super().execute(cast(Any, query), params, prepare=prepare, binary=binary)
        except psycopg.Error as exc:
            self._tag(exc, query)
            raise
        finally:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%.3f s  %s", time.perf_counter() - t0, _one_line(query, self))
        return self

    @contextmanager
    def copy(
        self, statement: Query, params: Params | None = None, *, writer: Any = None
    ) -> Iterator[psycopg.Copy]:
        """``Cursor.copy``; an error starting the COPY is tagged (one raised while data flows
        may come from the other end of a pipe, so it is not)."""
        started = False
        t0 = time.perf_counter()
        try:
            with super().copy(cast(Any, statement), params, writer=writer) as cp:
                started = True
                yield cp
        except psycopg.Error as exc:
            if not started:
                self._tag(exc, statement)
            raise
        finally:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%.3f s  %s", time.perf_counter() - t0, _one_line(statement, self))


#: longest statement text shown in a debug line
SQL_SHOWN = 160


def _one_line(query: Query, cursor: psycopg.Cursor[Any]) -> str:
    try:
        text = (
            query.as_string(cursor)
            if isinstance(query, sql.Composable)
            else str(query if not isinstance(query, bytes) else query.decode())
        )
    except Exception:  # a statement that cannot be rendered is still timed
        text = repr(query)
    flat = " ".join(text.split())
    return flat if len(flat) <= SQL_SHOWN else flat[: SQL_SHOWN - 3] + "..."


class UnexpectedResult(Exception):
    """A query returned what the code rules out: no row from an aggregate, a NULL where the
    schema forbids one, a value of another type. A bug or a broken invariant, never bad input:
    it fails loudly instead of turning into a 0 or a default."""


def _scalar(conn: Conn, query: Query, params: Params | None) -> tuple[Any, str]:
    cur = conn.cursor(row_factory=scalar_row).execute(cast(Any, query), params)
    rows = cur.fetchall()
    if len(rows) != 1:
        raise UnexpectedResult(f"{len(rows)} rows, not one, from: {_one_line(query, cur)}")
    return rows[0], _one_line(query, cur)


def one_value(conn: Conn, query: Query, params: Params | None = None, *, kind: type[T]) -> T:
    """The value of a one-row, one-column query (psycopg's ``scalar_row``), of type ``kind``;
    no row, a NULL or another type raise :class:`UnexpectedResult`."""
    got, shown = _scalar(conn, query, params)
    if not isinstance(got, kind):
        raise UnexpectedResult(f"{got!r} is not of type {kind.__name__}, from: {shown}")
    return got


def optional_value(
    conn: Conn, query: Query, params: Params | None = None, *, kind: type[T]
) -> T | None:
    """:func:`one_value` for a column that may be NULL (None); still exactly one row."""
    got, shown = _scalar(conn, query, params)
    if got is not None and not isinstance(got, kind):
        raise UnexpectedResult(f"{got!r} is not of type {kind.__name__} nor NULL, from: {shown}")
    return got


def schema_exists(conn: Conn, schema: str) -> bool:
    return one_value(
        conn, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (schema,), kind=bool
    )


def relation_exists(conn: Conn, schema: str, name: str) -> bool:
    return one_value(
        conn,
        "SELECT to_regclass(%s) IS NOT NULL",
        (sql.Identifier(schema, name).as_string(conn),),
        kind=bool,
    )


def ensure_database(server: Conn, name: str, *, recreate: bool = False) -> None:
    """Create database ``name`` unless it exists; ``recreate`` drops it first.

    ``server`` must be in autocommit mode (CREATE DATABASE cannot run in a transaction).
    """
    exists = server.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists and recreate:
        server.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        exists = None
    if not exists:
        server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
