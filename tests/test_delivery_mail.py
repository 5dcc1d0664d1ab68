"""``acme-mv mail`` against a real SMTP server (aiosmtpd on 127.0.0.1, TLS, AUTH): the message
parses, the attachments are export's files byte for byte, STARTTLS, implicit TLS and the login
work, and every refusal is one line with a non-zero exit and no password in it."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

import pytest

from acme_mv.config import Settings
from acme_mv.delivery import mail
from acme_mv.delivery.reports import Freshness, ReportSet
from acme_mv.errors import BadAddress, ConfigError, MailError
from tests.support import smtp_server
from tests.support.cli_runner import run
from tests.support.delivery_data import EXPECTED
from tests.support.smtp_server import PASSWORD, USER, SmtpServer


def _attachments(msg: EmailMessage) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for part in msg.iter_attachments():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found[str(part.get_filename())] = payload
    return found


def _by_report(files: dict[str, bytes]) -> dict[str, bytes]:
    out = {}
    for name, data in files.items():
        match = re.fullmatch(r"(\w+?)_result_\d{8}_\d{6}\.csv", name)
        assert match, name
        out[match[1]] = data
    return out


# --- the message, without a network ------------------------------------------------------


def test_build_message_attaches_the_exact_bytes_and_summarizes() -> None:
    as_of = datetime(2026, 11, 26, 6, 59, 30, tzinfo=UTC)
    reports = ReportSet(
        freshness=Freshness(refreshed_at=as_of, refreshed_batch_id=7, as_of=as_of),
        csv={"pending_items": EXPECTED["pending_items"], "top_dates": EXPECTED["top_dates"]},
    )
    msg = mail.build_message(
        reports,
        sender=Address(addr_spec="acme-mv@reports.example"),
        to=[Address("Lead", addr_spec="lead@example.com")],
        timezone="Europe/Berlin",
        now=datetime(2026, 11, 26, 7, 0, 5, tzinfo=UTC),
        summary_rows=2,
    )
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["To"] == "Lead <lead@example.com>"
    assert "2026-11-26 07:59:30 CET" in str(parsed["Subject"])  # as of, in the configured zone
    assert _attachments(parsed) == {
        "pending_items_result_20261126_080005.csv": EXPECTED["pending_items"].encode(),
        "top_dates_result_20261126_080005.csv": EXPECTED["top_dates"].encode(),
    }
    body = parsed.get_body(preferencelist=("html",))
    assert body is not None
    html = body.get_content()
    assert "07:59:30 CET" in html
    assert "<td>bolt ø8</td>" in html and "<td>nut &quot;M8&quot;</td>" in html
    assert "2 of 3 rows; all in pending_items_result_20261126_080005.csv" in html  # top rows only
    text = parsed.get_body(preferencelist=("plain",))
    assert text is not None and "pending_items (2 of 3 rows" in text.get_content()


@pytest.mark.parametrize(
    ("url", "host", "port", "security"),
    [
        ("smtp://reports@mail.example.com", "mail.example.com", 587, "starttls"),
        ("smtp://reports@mail.example.com:2525", "mail.example.com", 2525, "starttls"),
        ("smtps://reports@mail.example.com", "mail.example.com", 465, "tls"),
        ("smtp+insecure://relay.local", "relay.local", 25, "insecure"),
    ],
    ids=["smtp_starttls_587", "smtp_port_given", "smtps_465", "insecure_relay_25"],
)
def test_smtp_url(url: str, host: str, port: int, security: str, tmp_path: Path) -> None:
    target = mail.smtp_target(
        url, password=None if "insecure" in url else "pw", netrc_file=tmp_path / "none"
    )
    assert (target.host, target.port, target.security) == (host, port, security)
    assert "pw" not in repr(target)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "No SMTP server configured"),
        ("http://mail.example.com", "must start with smtp://"),
        ("smtp://reports:hunter2@mail.example.com", "not in ACME_MV_SMTP_URL"),
        ("smtp://", "names no host"),
        ("smtp://reports@mail.example.com:99999", "bad port"),
        ("smtp://reports@mail.example.com", "No password for SMTP user 'reports'"),
    ],
    ids=[
        "unset",
        "wrong_scheme",
        "password_in_url",
        "no_host",
        "bad_port",
        "user_without_password",
    ],
)
def test_smtp_url_refusals(
    url: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_MV_SMTP_URL", raising=False)
    monkeypatch.delenv("ACME_MV_SMTP_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        mail.smtp_target(url, netrc_file=tmp_path / "none")
    assert "hunter2" not in str(info.value)
    assert info.value.setting == (
        "ACME_MV_SMTP_PASSWORD" if "No password" in message else "ACME_MV_SMTP_URL"
    )


def test_no_password_over_an_unencrypted_connection(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="without encryption"):
        mail.smtp_target(
            "smtp+insecure://reports@relay.local", password="pw", netrc_file=tmp_path / "none"
        )


def test_password_from_netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACME_MV_SMTP_PASSWORD", raising=False)
    rc = tmp_path / ".netrc"
    rc.write_text("machine mail.example.com login reports password from-netrc\n")
    rc.chmod(0o600)
    assert (
        mail.smtp_target("smtp://reports@mail.example.com", netrc_file=rc).password == "from-netrc"
    )
    # no user in the URL: the netrc login is used
    assert mail.smtp_target("smtp://mail.example.com", netrc_file=rc).user == "reports"
    # a different user in the URL does not take another user's password
    with pytest.raises(ConfigError, match="No password for SMTP user 'other'"):
        mail.smtp_target("smtp://other@mail.example.com", netrc_file=rc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lead@example.com", ["lead@example.com"]),
        ("a@example.com, b@example.org", ["a@example.com", "b@example.org"]),
        ("Logistics Lead <lead@example.com>", ["Logistics Lead <lead@example.com>"]),
    ],
    ids=["one", "two_with_comma", "display_name"],
)
def test_parse_addresses(text: str, expected: list[str]) -> None:
    assert [str(a) for a in mail.parse_addresses(text)] == expected


@pytest.mark.parametrize("bad", ["lead", "lead@", "le ad@example.com", "a@@example.com", "<>", ""])
def test_bad_addresses(bad: str) -> None:
    with pytest.raises(BadAddress) as info:
        mail.parse_addresses(bad)
    assert info.value.address == bad.strip()
    assert info.value.exit_code == 2


# --- against the real server --------------------------------------------------------------


def test_mail_sends_exports_bytes_over_starttls_with_login(
    refreshed: str, smtp: SmtpServer, tmp_path: Path
) -> None:
    res = run("mail", "--to", "lead@example.com,ops@example.com")
    assert res.exit_code == 0, res.stderr
    assert smtp.inbox.logins == [USER]
    assert smtp.inbox.envelopes == [
        ("acme-mv@reports.example", ["lead@example.com", "ops@example.com"])
    ]
    (msg,) = smtp.inbox.messages
    sent = _attachments(msg)
    assert sorted(res.stdout.split()) == sorted(sent)
    exported = tmp_path / "exported"
    exported.mkdir()
    ex = run("export", "--all", "--output-dir", str(exported))
    assert ex.exit_code == 0, ex.stderr
    files = {p.name: p.read_bytes() for p in exported.iterdir()}
    assert _by_report(sent) == _by_report(files)
    assert _by_report(sent) == {name: text.encode() for name, text in EXPECTED.items()}
    html = msg.get_body(preferencelist=("html",))
    assert html is not None and "fresh as of" in html.get_content()
    assert PASSWORD not in res.stderr + res.stdout


def test_mail_one_report_over_implicit_tls(refreshed: str, smtps: SmtpServer) -> None:
    res = run("mail", "--to", "lead@example.com", "--report", "top_customers")
    assert res.exit_code == 0, res.stderr
    (msg,) = smtps.inbox.messages
    assert list(_by_report(_attachments(msg)).items()) == [
        ("top_customers", EXPECTED["top_customers"].encode())
    ]
    assert smtps.inbox.logins == [USER]


def test_wrong_password_is_one_line_without_the_password(
    refreshed: str, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_MV_SMTP_PASSWORD", "wrong-pw-123")
    res = run("mail", "--to", "lead@example.com")
    assert res.exit_code == 1
    assert "refused the login for 'reports': 535" in res.stderr
    assert "wrong-pw-123" not in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert smtp.inbox.messages == []


def test_refused_recipients_are_one_line(refreshed: str, smtp: SmtpServer) -> None:
    smtp.inbox.refuse_recipients = True
    res = run("mail", "--to", "lead@example.com")
    assert res.exit_code == 1
    assert "refused every recipient (lead@example.com: 550" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert PASSWORD not in res.stderr


def test_a_server_that_is_down(
    refreshed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = smtp_server.free_port()  # nothing listens there
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ACME_MV_SMTP_URL", f"smtp://{USER}@127.0.0.1:{port}")
    monkeypatch.setenv("ACME_MV_SMTP_PASSWORD", PASSWORD)
    res = run("mail", "--to", "lead@example.com")
    assert res.exit_code == 1
    assert f"Cannot send through the SMTP server 127.0.0.1:{port}" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_an_untrusted_certificate_is_refused(
    refreshed: str, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_MV_SMTP_CAFILE")
    with pytest.raises(
        MailError, match="certificate is not trusted .*: set ACME_MV_SMTP_CAFILE"
    ) as info:
        mail.mail_reports(
            Settings(database_url=refreshed), to="lead@example.com", target=mail.smtp_target()
        )
    assert info.value.port == smtp.port
    assert smtp.inbox.messages == [] and smtp.inbox.logins == []


def test_a_bad_address_is_refused_before_connecting(refreshed: str, smtp: SmtpServer) -> None:
    res = run("mail", "--to", "lead@example.com,not-an-address")
    assert res.exit_code == 2
    assert "Bad email address 'not-an-address'" in res.stderr
    assert smtp.inbox.connections == 0


def test_the_server_counts_connections(refreshed: str, smtp: SmtpServer) -> None:
    """The zero above means something: a good send is counted."""
    assert run("mail", "--to", "lead@example.com").exit_code == 0
    assert smtp.inbox.connections == 1


def test_an_unknown_report_is_refused_before_connecting(refreshed: str, smtp: SmtpServer) -> None:
    res = run("mail", "--to", "lead@example.com", "--report", "sync_batches")
    assert res.exit_code == 2  # a usage error
    assert (
        "Unknown report 'sync_batches'; the reports are: open_orders, top_dates, "
        "pending_items, top_customers" in res.stderr
    )
    assert smtp.inbox.connections == 0


def test_a_plain_relay(refreshed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """smtp+insecure:// sends without TLS or login; smtp:// refuses a server without STARTTLS."""
    with smtp_server.running(tmp_path, tls="none") as relay:
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.delenv("ACME_MV_SMTP_PASSWORD", raising=False)
        monkeypatch.setenv("ACME_MV_SMTP_URL", relay.url)
        res = run("mail", "--to", "lead@example.com")
        assert res.exit_code == 0, res.stderr
        assert len(relay.inbox.messages) == 1
        monkeypatch.setenv("ACME_MV_SMTP_URL", f"smtp://{relay.host}:{relay.port}")
        res = run("mail", "--to", "lead@example.com")
        assert res.exit_code == 1
        assert f"The SMTP server {relay.host}:{relay.port} does not support STARTTLS" in res.stderr
        assert len(relay.inbox.messages) == 1


def test_the_summary_leads_with_totals_and_the_dates_nearest_today() -> None:
    """The mail says the totals first (open orders, overdue ones, pending items), and its
    open_orders rows are the dates around today (the latest overdue ones, then the next
    days), not the oldest dates of the history."""
    as_of = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    open_orders = (
        "delivery_date,status,open_orders\n"
        "2025-01-02,PENDING,1\n2026-12-01,PENDING,2\n2026-12-06,PROCESSING,3\n"
        "2026-12-07,PENDING,4\n2026-12-08,PENDING,5\n2026-12-09,PENDING,6\n,PENDING,7\n"
    )
    reports = ReportSet(
        freshness=Freshness(refreshed_at=as_of, refreshed_batch_id=7, as_of=as_of),
        csv={"open_orders": open_orders, "pending_items": EXPECTED["pending_items"]},
    )
    msg = mail.build_message(
        reports,
        sender=Address(addr_spec="acme-mv@reports.example"),
        to=[Address(addr_spec="lead@example.com")],
        timezone="UTC",
        now=as_of,
        summary_rows=4,
    )
    text = msg.get_body(preferencelist=("plain",))
    assert text is not None
    body = text.get_content()
    assert "Open orders 28 (overdue, delivery date before today: 6); pending items 23." in body
    shown = [line.split(" | ")[0].strip() for line in body.splitlines() if "| PENDING" in line
             or "| PROCESSING" in line]  # fmt: skip
    assert shown == ["2026-12-06", "2026-12-01", "2026-12-07", "2026-12-08"]
