"""A real SMTP server on 127.0.0.1 for the mail tests: aiosmtpd, STARTTLS or implicit TLS with a
certificate from a throw-away CA (trustme), and AUTH with one user. The ``smtp`` and ``smtps``
fixtures start one and point the environment (``ACME_MV_SMTP_*``) at it.

The server keeps what it received (parsed messages, envelopes) and counts the
connections it accepted, so a test can prove that nothing connected.
"""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

USER = "reports"
PASSWORD = "s3cret-smtp-pw"


@dataclass
class Inbox:
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    connections: int = 0
    logins: list[str] = field(default_factory=list)
    #: RCPT answers 550 for every recipient (a refusing server)
    refuse_recipients: bool = False


class _Handler:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.inbox.refuse_recipients:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.inbox.messages.append(msg)
        self.inbox.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


class _CountingController(Controller):
    def __init__(self, inbox: Inbox, **kwargs: Any) -> None:
        super().__init__(_Handler(inbox), **kwargs)
        self.inbox = inbox

    def factory(self) -> SMTP:
        inbox = self.inbox

        class Counting(SMTP):
            counted = False

            def connection_made(self, transport: Any) -> None:
                if not self.counted:  # STARTTLS calls this again on the same session
                    self.counted = True
                    inbox.connections += 1
                super().connection_made(transport)

        with (
            warnings.catch_warnings()
        ):  # AUTH without STARTTLS on the implicit-TLS server: intended
            warnings.simplefilter("ignore", UserWarning)
            return Counting(self.handler, **self.SMTP_kwargs)


@dataclass
class SmtpServer:
    host: str
    port: int
    cafile: Path
    inbox: Inbox
    tls: str  # "starttls", "tls" or "none"

    @property
    def url(self) -> str:
        if self.tls == "none":
            return f"smtp+insecure://{self.host}:{self.port}"
        scheme = "smtps" if self.tls == "tls" else "smtp"
        return f"{scheme}://{USER}@{self.host}:{self.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _authenticate(inbox: Inbox) -> Any:
    def check(
        server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == USER
            and auth_data.password.decode() == PASSWORD
        )
        if ok:
            inbox.logins.append(USER)
        return AuthResult(success=ok, handled=False)

    return check


@contextmanager
def running(tmp: Path, *, tls: str = "starttls") -> Iterator[SmtpServer]:
    """An SMTP server requiring TLS (STARTTLS, or implicit with ``tls="tls"``) and AUTH;
    ``tls="none"``: a plain relay without either."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    cafile = tmp / "smtp-ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    inbox = Inbox()
    port = free_port()
    common: dict[str, Any] = {
        "hostname": "127.0.0.1",
        "port": port,
        "authenticator": _authenticate(inbox),
        "auth_required": True,
        "auth_require_tls": True,
    }
    if tls == "none":  # a plain relay: no TLS at all, no AUTH
        controller = _CountingController(inbox, hostname="127.0.0.1", port=port)
    elif tls == "tls":
        # aiosmtpd knows STARTTLS only: on an implicitly encrypted connection it must be told
        # that AUTH without STARTTLS is fine (the whole connection is TLS)
        common["auth_require_tls"] = False
        controller = _CountingController(inbox, ssl_context=server_ctx, **common)
    else:
        controller = _CountingController(
            inbox, tls_context=server_ctx, require_starttls=True, **common
        )
    controller.start()
    inbox.connections = 0  # the controller's own start-up probe
    try:
        yield SmtpServer(host="127.0.0.1", port=port, cafile=cafile, inbox=inbox, tls=tls)
    finally:
        controller.stop()


def _point_at(server: SmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no stray ~/.netrc
    monkeypatch.setenv("ACME_MV_SMTP_URL", server.url)
    monkeypatch.setenv("ACME_MV_SMTP_PASSWORD", PASSWORD)
    monkeypatch.setenv("ACME_MV_SMTP_CAFILE", str(server.cafile))
    monkeypatch.setenv("ACME_MV_MAIL_FROM", "acme-mv@reports.example")


@pytest.fixture
def smtp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    """STARTTLS on a submission-style port, AUTH required; the environment points at it."""
    with running(tmp_path) as server:
        _point_at(server, monkeypatch, tmp_path)
        yield server


@pytest.fixture
def smtps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    """Implicit TLS (smtps://), AUTH required."""
    with running(tmp_path, tls="tls") as server:
        _point_at(server, monkeypatch, tmp_path)
        yield server
