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
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from acme_mv.errors import BadArgument, ConfigError

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
    """Reject a URL libpq cannot parse, or would parse
    otherwise than meant, without echoing its secret."""
    import psycopg.conninfo

    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ConfigError(
            f"The {what} {mask_url(url)!r} is not a valid PostgreSQL URL or DSN"
        ) from None
    span = _userinfo_password(url)
    if span is not None and unquote(url[span[0] : span[1]]) != (params.get("password") or ""):
        # libpq ends the user:password part at the first @ (or /): the rest of the
        # password would become the host or the database name, and show in messages
        raise ConfigError(
            f"The {what} {mask_url(url)!r} is malformed: its password contains an unencoded "
            "@, / or similar; percent-encode it (@ as %40, / as %2F, : as %3A)"
        )


def validate_timezone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"Unknown time zone {name!r}; use an IANA name such as UTC or Europe/Berlin",
            setting=TIMEZONE_ENV,
        ) from None


_SCHEME = re.compile(r"(?P<head>\b(?:postgres|postgresql)://)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&#\s]*)", re.I)


def _userinfo_password(text: str, start: int = 0) -> tuple[int, int] | None:
    """Where the password meant by the ``postgresql://user:password@host`` at ``start`` is.

    Generous on purpose: the password runs from the first ``:`` after ``://``
    to the LAST ``@`` of the authority, so that a password with an unencoded
    ``@`` or ``/`` (which libpq cuts at its first ``@`` or ``/``) is masked
    whole. An ``@`` in the query string (after ``/...?``) does not count.
    """
    match = _SCHEME.search(text, start)
    if match is None:
        return None
    begin = match.end()
    end = len(text)
    for stop in (" ", "'", '"', "\n"):  # a URL quoted inside a message ends there
        at = text.find(stop, begin)
        if at != -1:
            end = min(end, at)
    rest = text[begin:end]
    slash = rest.find("/")
    query = rest.find("?", slash) if slash != -1 else -1
    authority = rest if query == -1 else rest[:query]
    last_at = authority.rfind("@")
    if last_at == -1:
        return None
    colon = authority.find(":", 0, last_at)
    if colon == -1:
        return None
    return begin + colon + 1, begin + last_at


def mask_url(url: str) -> str:
    """The URL or DSN (or a message quoting one) with any password replaced by ``********``."""
    out = url
    pos = 0
    while (span := _userinfo_password(out, pos)) is not None:
        out = out[: span[0]] + MASK + out[span[1] :]
        pos = span[0] + len(MASK)
    out = _QUERY_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", out)
    return _KV_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", out)


def describe_target(url: str) -> str:
    """A short, secret-free description of where a URL points (for logs)."""
    import psycopg.conninfo

    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return mask_url(url)
    span = _userinfo_password(url)
    if span is not None and unquote(url[span[0] : span[1]]) != (params.get("password") or ""):
        return mask_url(url)  # malformed: libpq's host or dbname would hold part of the password
    host = str(params.get("host") or os.environ.get("PGHOST") or "local socket")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    dbname = str(params.get("dbname") or os.environ.get("PGDATABASE") or "(default)")
    if host.startswith("/"):
        return f"{dbname} on {host}"
    return f"{dbname} on {host}:{port}"


def scrub(text: str, *urls: str | None) -> str:
    """Remove every password that appears in ``urls`` from ``text``."""
    import psycopg.conninfo

    for url in urls:
        if not url:
            continue
        try:
            pw = psycopg.conninfo.conninfo_to_dict(url).get("password")
        except psycopg.ProgrammingError:
            pw = None
        if pw:
            text = text.replace(str(pw), MASK)
        span = _userinfo_password(url)
        if span is not None:  # what the user meant as the password, in case libpq cut it
            meant = unquote(url[span[0] : span[1]])
            for piece in {meant, *re.split(r"[@/]", meant)}:
                if len(piece) >= MIN_SCRUBBED:
                    text = text.replace(piece, MASK)
    return mask_url(text)


#: shortest password fragment scrubbed from messages (shorter ones would mangle
#: ordinary words and numbers; a malformed URL is refused before any connection)
MIN_SCRUBBED = 4


#: the grammar of every duration acme-mv takes (options, environment, Python API), in full:
#:
#:     duration := number | part (" "* part)*
#:     part     := number " "* unit
#:     number   := digits ["." digits]          (no sign, exponent, "_", "inf" or "nan")
#:     unit     := "d" | "h" | "m" | "s" | "ms"  (any case; "m" is minutes)
#:
#: A plain number is seconds; parts add up, units largest first, each at most
#: once (``1h 30m``, ``1m30s``; not ``30s1m`` nor ``1s1s``). Surrounding blanks
#: are ignored. ``0`` is a valid duration: what it means is up to the option.
DURATION_GRAMMAR = "10s, 500ms, 1m30s, 2h, 1d or a plain number of seconds"
_NUMBER = r"\d+(?:\.\d+)?"
_PLAIN = re.compile(_NUMBER)
_DURATION_PART = re.compile(rf"(?P<n>{_NUMBER}) *(?P<unit>ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_UNIT_ORDER = ["d", "h", "m", "s", "ms"]


def parse_duration(text: str) -> float:
    """A duration (see :data:`DURATION_GRAMMAR` above for the grammar) -> seconds.

    ``"10s"``, ``"500ms"``, ``"1m30s"``, ``"1h 30m"``, ``"2H"``, ``"1d"``, ``"90"``, ``"2.5"``.
    The one duration parser: every option and API argument that takes a
    duration as text goes through it. Pure (no clock, no database). Raises
    :class:`BadArgument` quoting the text.
    """
    seconds = _parse_duration(text.strip().lower())
    if seconds is None:
        raise BadArgument(f"{text!r} is not a duration such as {DURATION_GRAMMAR}")
    return seconds


#: the grammar of a size in bytes: a plain number of bytes, or a number and one of
#: B, kB, MB, GB, TB (any case; 1024-based, as PostgreSQL's settings)
SIZE_GRAMMAR = "10GB, 512MB, 64kB or a plain number of bytes"
_SIZE = re.compile(rf"(?P<n>{_NUMBER}) *(?P<unit>b|kb|mb|gb|tb)?")
_UNIT_BYTES = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}


def parse_size(text: str) -> int:
    """A size (``"10GB"``, ``"512MB"``, ``"1024"``) -> bytes; :class:`BadArgument` quoting it."""
    match = _SIZE.fullmatch(text.strip().lower())
    if match is None:
        raise BadArgument(f"{text!r} is not a size such as {SIZE_GRAMMAR}")
    return int(float(match["n"]) * _UNIT_BYTES[match["unit"] or "b"])


def _parse_duration(text: str) -> float | None:
    if _PLAIN.fullmatch(text):
        return float(text)
    pos = 0
    seconds = 0.0
    units: list[str] = []
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            return None
        units.append(match["unit"])
        seconds += float(match["n"]) * _UNIT_S[match["unit"]]
        pos = match.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
    order = [_UNIT_ORDER.index(u) for u in units]
    if not units or order != sorted(set(order)):
        return None
    return seconds
