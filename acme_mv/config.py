"""Settings: where the warehouse and the source are, and how to show them safely.

The warehouse comes from ``ACME_MV_DATABASE_URL`` (or ``--database-url``), the
source from ``ACME_MV_SOURCE_URL`` (or ``--source-url``); an unset source means
the warehouse database itself (the original deployment kept ``operations``,
``staging`` and ``analytics`` in one database). An empty URL is valid: libpq
then uses its own variables (``PGHOST``, ``PGUSER``, ``PGSERVICE``...) and
service files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg.conninfo

from acme_mv.errors import ConfigError

DATABASE_URL_ENV = "ACME_MV_DATABASE_URL"
SOURCE_URL_ENV = "ACME_MV_SOURCE_URL"
TIMEZONE_ENV = "ACME_MV_TIMEZONE"
DEFAULT_TIMEZONE = "UTC"

MASK = "********"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Connection targets and the reporting time zone."""

    database_url: str = ""
    source_url: str | None = None
    timezone: str = DEFAULT_TIMEZONE

    @property
    def effective_source_url(self) -> str:
        """The source URL, falling back to the warehouse's."""
        return self.database_url if self.source_url is None else self.source_url

    @classmethod
    def from_env(
        cls,
        *,
        database_url: str | None = None,
        source_url: str | None = None,
        timezone: str | None = None,
    ) -> Settings:
        """Explicit arguments win over the environment."""
        db = database_url if database_url is not None else os.environ.get(DATABASE_URL_ENV, "")
        src = source_url if source_url is not None else os.environ.get(SOURCE_URL_ENV) or None
        tz = timezone or os.environ.get(TIMEZONE_ENV) or DEFAULT_TIMEZONE
        validate_conninfo(db, what="warehouse URL")
        if src is not None:
            validate_conninfo(src, what="source URL")
        validate_timezone(tz)
        return cls(database_url=db, source_url=src, timezone=tz)


def validate_conninfo(url: str, *, what: str) -> None:
    """Reject a URL libpq cannot parse, without echoing its secret."""
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ConfigError(f"The {what} {mask_url(url)!r} is not a valid PostgreSQL URL or DSN") from None


def validate_timezone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"Unknown time zone {name!r}; use an IANA name such as UTC or Europe/Berlin") from None


_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@?#]*:)(?P<pw>[^@/?#]*)(?P<tail>@)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&#\s]*)", re.I)


def mask_url(url: str) -> str:
    """The URL or DSN with any password replaced by ``********``."""
    out = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK if m['pw'] else ''}{m['tail']}", url)
    out = _QUERY_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", out)
    return _KV_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", out)


def describe_target(url: str) -> str:
    """A short, secret-free description of where a URL points (for logs)."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return mask_url(url)
    host = str(params.get("host") or os.environ.get("PGHOST") or "local socket")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    dbname = str(params.get("dbname") or os.environ.get("PGDATABASE") or "(default)")
    if host.startswith("/"):
        return f"{dbname} on {host}"
    return f"{dbname} on {host}:{port}"


def scrub(text: str, *urls: str | None) -> str:
    """Remove every password that appears in ``urls`` from ``text``."""
    for url in urls:
        if not url:
            continue
        try:
            pw = psycopg.conninfo.conninfo_to_dict(url).get("password")
        except psycopg.ProgrammingError:
            pw = None
        if pw:
            text = text.replace(str(pw), MASK)
    return mask_url(text)
