"""One exception base for the package; the CLI turns each into one line.

Every message names the object at fault and, where there is one, the fix.
Errors about a server carry ``role`` ("warehouse" or "source") so that a log
line can say which server failed, and ``transient``: whether waiting and
retrying can fix it (``acme-mv run`` retries those, and only those).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

#: Every exit code of the CLI and what it means: the one table (docs/reference.md shows it,
#: generated; a test checks that every error class's code is here).
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "an error: one line naming what failed and how to fix it (cannot connect, login refused, "
    "not migrated, schema drift, missing privilege, bad configuration, a refresh refused by its "
    "data, cannot write the export, unexpected error)",
    2: "usage error, one line (unknown command, option, report, table or format; options that "
    "exclude each other; a bad duration, address or limit)",
    3: "another acme-mv process holds the lock or the replication slot (`sync --no-wait`)",
    4: "`check --fail-on-gaps` found gaps",
    5: "`status --max-age`: the reports are stale or were never refreshed; `cdc status`, "
    "`status --max-age`: the replication slot is lost, about to be, or retains too much WAL",
    6: "`verify`: the reports differ from a from-scratch computation, or do not include every "
    "batch staging holds",
    130: "interrupted (Ctrl-C, or a second SIGINT/SIGTERM): the open transaction rolled back",
}
#: `check --fail-on-gaps` found gaps
GAPS_EXIT_CODE = 4
#: interrupted
INTERRUPTED_EXIT_CODE = 130


def exit_code_table() -> str:
    """:data:`EXIT_CODES` as a Markdown table."""
    rows = "".join(f"| {code} | {meaning} |\n" for code, meaning in EXIT_CODES.items())
    return f"| code | meaning |\n|---|---|\n{rows}"


class AcmeMvError(Exception):
    """Base of every error acme-mv raises on purpose."""

    #: process exit code the CLI uses for this error
    exit_code: int = 1
    #: whether retrying later may succeed without anyone changing anything
    transient: bool = False


class ConfigError(AcmeMvError):
    """A setting is missing or malformed; ``setting`` names it (an environment variable or an
    option) when there is one."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        #: the environment variable or option at fault (``ACME_MV_SMTP_URL``, ``--mail-at``)
        self.setting = setting


class BadArgument(AcmeMvError):
    """A command-line argument is not one acme-mv accepts (a usage error: exit 2)."""

    exit_code = 2


class ServerError(AcmeMvError):
    """A server failed while acme-mv talked to it (or could not be reached).

    ``role`` is ``"warehouse"`` or ``"source"``; ``sqlstate`` is the server's
    error code when it sent one.
    """

    transient = True

    def __init__(self, message: str, *, role: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.role = role
        self.sqlstate = sqlstate


class ConnectionFailed(ServerError):
    """A server could not be reached, or is not accepting connections right now."""


class AuthenticationFailed(ConnectionFailed):
    """The server refused the login itself (password, role, pg_hba.conf): a configuration fault."""

    transient = False


class ConnectionLost(ServerError):
    """A session ended or failed mid-way: server shut down or restarted, session
    terminated, network cut, serialization failure or deadlock."""


class PermissionDenied(ServerError):
    """The role lacks a privilege; ``privilege`` and ``object`` name the missing grant."""

    transient = False

    def __init__(
        self, message: str, *, role: str, privilege: str, object: str, sqlstate: str | None = None
    ) -> None:
        super().__init__(message, role=role, sqlstate=sqlstate)
        self.privilege = privilege
        self.object = object


class NotMigrated(AcmeMvError):
    """The warehouse has not been migrated to the revision this code needs."""

    def __init__(self, message: str, *, current: str | None, head: str) -> None:
        super().__init__(message)
        #: the warehouse's revision (None: never migrated)
        self.current = current
        #: the revision this code needs
        self.head = head


class MigrationFailed(AcmeMvError):
    """A migration (or the revision asked for) failed; the message is PostgreSQL's, on one line."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        #: the PostgreSQL error class (``42501``: a missing
        #: privilege), None when not from the server
        self.sqlstate = sqlstate


class GrantFailed(AcmeMvError):
    """The report-reader grants could not be given (no such role, not the owner)."""

    def __init__(self, message: str, *, role: str) -> None:
        super().__init__(message)
        #: the role that was to be granted
        self.role = role


class SchemaDrift(AcmeMvError):
    """The source's tables or columns are not what the contract states.

    ``table`` is the qualified table (``operations.orders``); ``column`` the column at fault
    (None when the whole table is missing); ``expected``/``actual`` its contract type and the
    type found (``actual`` None: the column is missing).
    """

    def __init__(
        self,
        message: str,
        *,
        table: str,
        column: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
    ) -> None:
        super().__init__(message)
        self.table = table
        self.column = column
        self.expected = expected
        self.actual = actual


class Busy(AcmeMvError):
    """Another acme-mv process holds the lock this one needs; ``resource`` names it (the sync
    lock, a source table, a replication slot)."""

    exit_code = 3

    def __init__(self, message: str, *, resource: str) -> None:
        super().__init__(message)
        self.resource = resource


class Stale(AcmeMvError):
    """The reports are older than the freshness asked for (``status --max-age``)."""

    exit_code = 5

    def __init__(self, message: str, *, age_s: float | None, max_age_s: float) -> None:
        super().__init__(message)
        #: the reports' age in seconds (None: never refreshed)
        self.age_s = age_s
        self.max_age_s = max_age_s


class SampleError(AcmeMvError):
    """The sample source cannot be created or loaded as asked."""


class UnknownReport(BadArgument):
    """A report name that acme-mv does not know."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class ExportError(AcmeMvError):
    """A report cannot be written where it was asked to go; ``path`` is the file or directory
    at fault (None for a bad option such as ``--limit``)."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class NeverRefreshed(AcmeMvError):
    """The analytics views exist but have never been refreshed."""


class EmbeddedUnavailable(AcmeMvError):
    """The embedded PostgreSQL server cannot be started."""


class BadAddress(ConfigError):
    """An email address that cannot be parsed (refused before any connection)."""

    exit_code = 2

    def __init__(self, message: str, *, address: str) -> None:
        super().__init__(message)
        self.address = address


class MailError(AcmeMvError):
    """The SMTP server could not be reached, refused the login or refused the message."""

    def __init__(self, message: str, *, host: str, port: int, code: int | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.port = port
        #: the SMTP reply code when the server answered with one
        self.code = code


class VerifyFailed(AcmeMvError):
    """``acme-mv verify`` found reports that differ from a from-scratch computation."""

    exit_code = 6

    def __init__(self, message: str, *, differences: int) -> None:
        super().__init__(message)
        self.differences = differences


class RefreshFailed(AcmeMvError):
    """A refresh failed on the data it writes (a summary row its table refuses): retrying the
    same batches fails again, so it is not a server's failure; the reports stay as they were.
    ``table`` is the summary table, ``key`` its group columns."""

    def __init__(self, message: str, *, table: str, key: tuple[str, ...]) -> None:
        super().__init__(message)
        self.table = table
        self.key = key


class ReportsBehind(VerifyFailed):
    """``acme-mv verify``: the reports do not include every committed batch (no refresh since)."""

    def __init__(self, message: str, *, refreshed_batch_id: int, newest_batch_id: int) -> None:
        super().__init__(message, differences=0)
        #: the newest batch the reports include (0: none)
        self.refreshed_batch_id = refreshed_batch_id
        #: the newest batch staging holds
        self.newest_batch_id = newest_batch_id


class HistoryUnavailable(AcmeMvError):
    """A report as of a moment outside the kept history (``--as-of``)."""

    def __init__(self, message: str, *, at: dt.datetime, history_batch_id: int) -> None:
        super().__init__(message)
        #: the moment asked for
        self.at = at
        #: the history kept starts after this batch
        self.history_batch_id = history_batch_id


class ListenFailed(AcmeMvError):
    """A server of acme-mv's own (the dashboard) cannot listen on the address asked for."""

    def __init__(self, message: str, *, host: str, port: int) -> None:
        super().__init__(message)
        self.host = host
        self.port = port


class CopyFailed(AcmeMvError):
    """A worker of the parallel initial copy failed; nothing was attached."""

    def __init__(self, message: str, *, table: str) -> None:
        super().__init__(message)
        #: the staging table whose load failed
        self.table = table
