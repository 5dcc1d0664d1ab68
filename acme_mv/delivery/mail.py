"""``acme-mv mail``: one email with the reports as CSV attachments and an HTML summary.

Settings (environment):

- ``ACME_MV_SMTP_URL``: where and how to connect. The scheme decides the transport:

  ========================  =======================================  ============
  scheme                    transport                                default port
  ========================  =======================================  ============
  ``smtp://``               STARTTLS, required (refused if missing)  587
  ``smtps://``              implicit TLS                             465
  ``smtp+insecure://``      no encryption at all (a local relay);    25
                            no login allowed over it
  ========================  =======================================  ============

  A user goes in the URL (``smtp://reports@mail.example.com``); a password never
  does (refused): it comes from ``ACME_MV_SMTP_PASSWORD`` or from ``~/.netrc``
  (``machine HOST login USER password ...``). It is never printed: every error
  message is scrubbed of it.
- ``ACME_MV_SMTP_CAFILE``: a PEM file of CA certificates to trust instead of the
  system's (a private mail server's CA).
- ``ACME_MV_MAIL_FROM``: the sender (default ``acme-mv@<this host's name>``).

Addresses are parsed (``email.headerregistry.Address``) before anything
connects: a bad one is refused with :class:`~acme_mv.errors.BadAddress`.
The message is built by :func:`build_message` without any network; the
attachments are the bytes of ``acme-mv export``'s files (base64, so line
endings survive), named as export names them.
"""

from __future__ import annotations

import html
import logging
import netrc
import os
import smtplib
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

from acme_mv.config import MASK, Settings
from acme_mv.db import connection
from acme_mv.delivery.reports import ReportSet, read_reports
from acme_mv.errors import BadAddress, ConfigError, MailError, NeverRefreshed
from acme_mv.reports.export import default_name, report_query
from acme_mv.revision import require_head

log = logging.getLogger(__name__)

SMTP_URL_ENV = "ACME_MV_SMTP_URL"
SMTP_PASSWORD_ENV = "ACME_MV_SMTP_PASSWORD"
SMTP_CAFILE_ENV = "ACME_MV_SMTP_CAFILE"
MAIL_FROM_ENV = "ACME_MV_MAIL_FROM"

Security = Literal["starttls", "tls", "insecure"]
_SCHEMES: dict[str, tuple[Security, int]] = {
    "smtp": ("starttls", 587),
    "smtps": ("tls", 465),
    "smtp+insecure": ("insecure", 25),
}
#: seconds to wait for the SMTP server at each step: a relay that hangs must not
#: stall the runner's cycle for long, a busy one still gets time to answer
SMTP_TIMEOUT_S = 30
#: rows of each report shown in the message body (the attachment has them all)
SUMMARY_ROWS = 10


@dataclass(frozen=True, kw_only=True)
class SmtpTarget:
    """Where and how to send; ``password`` is never shown by ``repr``."""

    host: str
    port: int
    security: Security
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def scrub(self, text: str) -> str:
        return text.replace(self.password, MASK) if self.password else text


def smtp_target(
    url: str | None = None,
    *,
    password: str | None = None,
    cafile: str | None = None,
    netrc_file: Path | None = None,
) -> SmtpTarget:
    """Parse ``ACME_MV_SMTP_URL`` (or ``url``) and find the password; no connection is made."""
    text = url if url is not None else os.environ.get(SMTP_URL_ENV, "")
    if not text:
        raise ConfigError(
            f"No SMTP server configured: set {SMTP_URL_ENV}, e.g. smtp://user@mail.example.com:587",
            setting=SMTP_URL_ENV,
        )
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"{SMTP_URL_ENV} must start with smtp:// "
            "(STARTTLS), smtps:// (TLS) or smtp+insecure:// "
            f"(no encryption), not {scheme + '://' if scheme else repr(text.split('@')[-1])}",
            setting=SMTP_URL_ENV,
        )
    if parts.password is not None:
        raise ConfigError(
            f"Put the SMTP password in {SMTP_PASSWORD_ENV} or ~/.netrc, not in {SMTP_URL_ENV}",
            setting=SMTP_URL_ENV,
        )
    security, default_port = _SCHEMES[scheme]
    host = parts.hostname
    if not host:
        raise ConfigError(
            f"{SMTP_URL_ENV} names no host (e.g. smtp://user@mail.example.com:587)",
            setting=SMTP_URL_ENV,
        )
    try:
        port = parts.port or default_port
    except ValueError:
        raise ConfigError(
            f"{SMTP_URL_ENV} has a bad port; use a number such as 587", setting=SMTP_URL_ENV
        ) from None
    user = unquote(parts.username) if parts.username else None
    secret = password if password is not None else os.environ.get(SMTP_PASSWORD_ENV) or None
    if secret is None:
        user, secret = _from_netrc(host, user, netrc_file)
    if secret is not None and user is None:
        raise ConfigError(
            f"An SMTP password is set but {SMTP_URL_ENV} names no user (smtp://USER@{host})",
            setting=SMTP_URL_ENV,
        )
    if user is not None and secret is None:
        raise ConfigError(
            f"No password for SMTP user {user!r}: set {SMTP_PASSWORD_ENV} or add "
            f"'machine {host} login {user} password ...' to ~/.netrc",
            setting=SMTP_PASSWORD_ENV,
        )
    if security == "insecure" and user is not None:
        raise ConfigError(
            "Refusing to send an SMTP password without encryption (smtp+insecure://); "
            "use smtp:// (STARTTLS) or smtps:// (TLS)",
            setting=SMTP_URL_ENV,
        )
    ca = cafile if cafile is not None else os.environ.get(SMTP_CAFILE_ENV) or None
    if ca is not None and not Path(ca).is_file():
        raise ConfigError(f"{SMTP_CAFILE_ENV} {ca!r} is not a file", setting=SMTP_CAFILE_ENV)
    return SmtpTarget(
        host=host, port=port, security=security, user=user, password=secret, cafile=ca
    )


def _from_netrc(host: str, user: str | None, path: Path | None) -> tuple[str | None, str | None]:
    """(user, password) from ~/.netrc for ``host`` (a login there must match the URL's user)."""
    file = path or Path.home() / ".netrc"
    if not file.is_file():
        return user, None
    try:
        entry = netrc.netrc(str(file)).authenticators(host)
    except netrc.NetrcParseError as exc:  # its message may quote a token: show the line only
        raise ConfigError(f"Cannot parse {file} (line {exc.lineno})") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read {file}: {exc.strerror or exc}") from None
    if entry is None:
        return user, None
    login, _account, password = entry
    if user is not None and login and login != user:
        return user, None
    return (user or login or None), (password or None)


def parse_addresses(values: str | Iterable[str]) -> list[Address]:
    """``"a@x.com, Bob <b@y.org>"`` (or a list of such)
    -> addresses; the first bad one raises BadAddress."""
    texts = [values] if isinstance(values, str) else list(values)
    found: list[Address] = []
    for text in texts:
        for piece in (p.strip() for p in text.split(",")):
            if not piece:
                continue
            if ";" in piece:
                raise BadAddress(
                    f"Bad email address {piece!r}: separate addresses with commas, not semicolons",
                    address=piece,
                )
            pairs = getaddresses([piece])
            name, spec = pairs[0] if len(pairs) == 1 else ("", "")
            try:
                address = Address(display_name=name, addr_spec=spec)
            except (ValueError, IndexError, TypeError):  # HeaderParseError is a ValueError
                raise BadAddress(
                    f"Bad email address {piece!r}: expected user@domain", address=piece
                ) from None
            if not address.username or not address.domain or any(c.isspace() for c in spec):
                raise BadAddress(
                    f"Bad email address {piece!r}: expected user@domain", address=piece
                )
            found.append(address)
    if not found:
        raise BadAddress(
            "No recipient: give at least one address (--to user@example.com)", address=""
        )
    return found


def default_sender() -> str:
    return os.environ.get(MAIL_FROM_ENV) or f"acme-mv@{socket.getfqdn() or 'localhost'}"


def build_message(
    reports: ReportSet,
    *,
    sender: Address,
    to: Sequence[Address],
    timezone: str,
    now: datetime,
    summary_rows: int = SUMMARY_ROWS,
) -> EmailMessage:
    """The message: a text and an HTML summary of each report, its CSV attached. No network."""
    tz = ZoneInfo(timezone)
    local_now = now.astimezone(tz)
    as_of = reports.freshness.as_of.astimezone(tz)
    as_of_text = f"{as_of:%Y-%m-%d %H:%M:%S} {as_of.tzname()}"
    msg = EmailMessage()
    msg["Subject"] = f"ACME reports, data as of {as_of_text}"
    msg["From"] = sender
    msg["To"] = list(to)
    msg["Date"] = formatdate(now.timestamp(), localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.domain or None)
    plain = [f"ACME reports; the data is fresh as of {as_of_text}.", ""]
    parts = [
        "<html><body>",
        f"<p>ACME reports; the data is fresh as of <strong>{html.escape(as_of_text)}</strong>.</p>",
    ]
    headline = _headline(reports, local_now.date())
    if headline:
        plain += [headline, ""]
        parts.append(f"<p><strong>{html.escape(headline)}</strong></p>")
    files: list[tuple[str, bytes]] = []
    for name in reports.csv:
        header, rows = reports.table(name)
        filename = default_name(name, fmt="csv", at=local_now)
        files.append((filename, reports.csv_bytes(name)))
        shown = rows[:summary_rows]
        which = ""
        if name == "open_orders":
            shown = nearest_open_orders(rows, local_now.date(), summary_rows)
            which = " from the oldest overdue date on; dates nearest to today first"
        more = (
            f"{len(shown)} of {len(rows)} rows{which}; all in {filename}"
            if len(rows) > len(shown)
            else f"{len(rows)} rows"
        )
        plain += [f"{name} ({more})", "  " + " | ".join(header)]
        plain += ["  " + " | ".join(row) for row in shown]
        plain.append("")
        parts.append(f"<h3>{html.escape(name)}</h3>")
        parts.append('<table border="1" cellpadding="3" cellspacing="0"><tr>')
        parts.extend(f"<th>{html.escape(c)}</th>" for c in header)
        parts.append("</tr>")
        for row in shown:
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
        parts.append(f"</table><p><small>{html.escape(more)}</small></p>")
    parts.append("</body></html>")
    msg.set_content("\n".join(plain))
    msg.add_alternative("\n".join(parts), subtype="html")
    for filename, data in files:
        msg.add_attachment(data, maintype="text", subtype="csv", filename=filename)
    return msg


def _total(rows: Sequence[list[str]], column: int) -> int:
    return sum(int(row[column]) for row in rows if row[column].strip())


def overdue(rows: Sequence[list[str]], today: date) -> list[list[str]]:
    """The open_orders rows (delivery_date, status, open_orders) of dates before ``today``."""
    return [row for row in rows if row[0] and date.fromisoformat(row[0]) < today]


def nearest_open_orders(rows: Sequence[list[str]], today: date, n: int) -> list[list[str]]:
    """What a logistics lead reads first: the rows of the dates nearest to ``today``, overdue
    dates first (most recent overdue first), then today and the next days; at most ``n``."""
    late = sorted(overdue(rows, today), key=lambda row: row[0], reverse=True)
    coming = sorted(
        (row for row in rows if row[0] and date.fromisoformat(row[0]) >= today),
        key=lambda row: row[0],
    )
    return (late[: n // 2] + coming)[:n] if coming else late[:n]


def _headline(reports: ReportSet, today: date) -> str:
    """``Open orders 1,234 (overdue 56); pending items 7,890.``, from the reports mailed."""
    said = []
    if "open_orders" in reports.csv:
        _, rows = reports.table("open_orders")
        said.append(
            f"Open orders {_total(rows, 2):,} (overdue, delivery date before today: "
            f"{_total(overdue(rows, today), 2):,})"
        )
    if "pending_items" in reports.csv:
        header, rows = reports.table("pending_items")
        said.append(f"pending items {_total(rows, len(header) - 1):,}")
    return "; ".join(said) + "." if said else ""


def send(message: EmailMessage, target: SmtpTarget) -> dict[str, tuple[int, bytes]]:
    """Hand ``message`` to the server; returns the
    recipients it refused (all refused raises MailError)."""
    try:
        return _send(message, target)
    except smtplib.SMTPAuthenticationError as exc:
        raise _mail_error(target, f"refused the login for {target.user!r}", exc) from None
    except smtplib.SMTPRecipientsRefused as exc:
        first = next(iter(exc.recipients.items()), None)
        detail = f"{first[0]}: {first[1][0]} {_text(first[1][1])}" if first else ""
        raise MailError(
            target.scrub(f"The SMTP server {target.where} refused every recipient ({detail})"),
            host=target.host,
            port=target.port,
            code=first[1][0] if first else None,
        ) from None
    except smtplib.SMTPResponseException as exc:
        raise _mail_error(target, "refused the message", exc) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise _failed(target, f"The SMTP server {target.where} does not support {exc}") from None
    except ssl.SSLCertVerificationError as exc:
        raise _failed(
            target,
            f"The SMTP server {target.where}'s certificate is not trusted "
            f"({exc.verify_message or exc}): set ACME_MV_SMTP_CAFILE to its CA's PEM file",
        ) from None
    except ssl.SSLError as exc:
        fix = (
            "smtps:// is implicit TLS (usually port 465); use smtp:// for a server that "
            "offers STARTTLS (587), smtp+insecure:// for a local relay without TLS"
            if target.security == "tls"
            else "check the server's TLS set-up"
        )
        raise _failed(
            target,
            f"Cannot start TLS with the SMTP server {target.where} ({exc.reason or exc}): {fix}",
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        raise _failed(
            target, f"Cannot send through the SMTP server {target.where}: {reason}"
        ) from None


def _send(message: EmailMessage, target: SmtpTarget) -> dict[str, tuple[int, bytes]]:
    context = ssl.create_default_context(cafile=target.cafile)
    client: smtplib.SMTP
    if target.security == "tls":
        client = smtplib.SMTP_SSL(target.host, target.port, timeout=SMTP_TIMEOUT_S, context=context)
    else:
        client = smtplib.SMTP(target.host, target.port, timeout=SMTP_TIMEOUT_S)
    with client:
        client.ehlo()
        if target.security == "starttls":
            if not client.has_extn("starttls"):
                raise smtplib.SMTPNotSupportedError(
                    "STARTTLS, which smtp:// requires: use smtps:// for implicit TLS (port 465), "
                    "or smtp+insecure:// for a local relay without encryption"
                )
            client.starttls(context=context)
            client.ehlo()
        if target.user is not None and target.password is not None:
            client.login(target.user, target.password)
        refused = client.send_message(message)
    if refused:
        log.warning("the SMTP server refused %s", ", ".join(sorted(refused)))
    return refused


def _text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())


def _failed(target: SmtpTarget, message: str) -> MailError:
    """A failed send to ``target``: ``message`` without the password."""
    return MailError(target.scrub(message), host=target.host, port=target.port)


def _mail_error(target: SmtpTarget, what: str, exc: smtplib.SMTPResponseException) -> MailError:
    return MailError(
        target.scrub(
            f"The SMTP server {target.where} {what}: {exc.smtp_code} {_text(exc.smtp_error)}"
        ),
        host=target.host,
        port=target.port,
        code=exc.smtp_code,
    )


@dataclass(frozen=True, kw_only=True)
class MailResult:
    recipients: list[str]
    attachments: list[str]
    as_of: datetime
    refreshed_batch_id: int | None
    refused: list[str]


def read_for_mail(settings: Settings, names: Sequence[str] | None = None) -> ReportSet:
    """The reports to send, from the warehouse (migrated, refreshed)."""
    for name in names or ():
        report_query(name)  # an unknown name raises UnknownReport, before any connection
    with connection(settings.database_url, role="warehouse", autocommit=True) as conn:
        require_head(conn)
        reports = read_reports(conn, names)
    if reports is None:
        raise NeverRefreshed(
            "The analytics views have never been refreshed. Run `acme-mv refresh` first"
        )
    return reports


def mail_reports(
    settings: Settings,
    *,
    to: str | Iterable[str],
    target: SmtpTarget,
    names: Sequence[str] | None = None,
    sender: str | None = None,
    now: datetime | None = None,
) -> MailResult:
    """Read the reports and send them: addresses are checked
    before the warehouse or the server is touched."""
    recipients = parse_addresses(to)
    from_addr = parse_addresses(sender or default_sender())[0]
    reports = read_for_mail(settings, names)
    moment = now or datetime.now(UTC)
    message = build_message(
        reports, sender=from_addr, to=recipients, timezone=settings.timezone, now=moment
    )
    refused = send(message, target)
    attachments = [str(part.get_filename()) for part in message.iter_attachments()]
    log.info(
        "mailed %s to %s via %s (data as of %s)",
        ", ".join(attachments),
        ", ".join(a.addr_spec for a in recipients),
        target.where,
        reports.freshness.as_of.isoformat(timespec="seconds"),
    )
    return MailResult(
        recipients=[a.addr_spec for a in recipients],
        attachments=attachments,
        as_of=reports.freshness.as_of,
        refreshed_batch_id=reports.freshness.refreshed_batch_id,
        refused=sorted(refused),
    )
