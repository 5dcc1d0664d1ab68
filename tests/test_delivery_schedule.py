"""The daily mail of ``run --mail-at``: due after the hour in the configured zone, sent once per
day even with two runners, an SMTP failure logged, recorded and retried next cycle."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, time

import psycopg
import pytest

from acme_mv.config import Settings
from acme_mv.delivery import mail
from acme_mv.delivery.schedule import DailyMail, parse_at, sends
from acme_mv.errors import ConfigError
from tests.support import smtp_server
from tests.support.cli_runner import run
from tests.support.delivery_data import DATA, EXPECTED
from tests.support.smtp_server import PASSWORD, USER, SmtpServer

DAY1_BEFORE = datetime(2026, 11, 26, 5, 59, tzinfo=UTC)  # 06:59 in Berlin
DAY1_AFTER = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)  # 07:00 in Berlin
DAY2_AFTER = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@pytest.fixture
def settings(refreshed: str) -> Settings:
    return Settings(database_url=refreshed, timezone="Europe/Berlin")


def _daily(target: mail.SmtpTarget) -> DailyMail:
    return DailyMail.from_options(
        at="07:00", to="lead@example.com", target=target, sender="acme@reports.example"
    )


@pytest.mark.parametrize(
    ("text", "at"), [("07:00", time(7, 0)), ("7:05", time(7, 5)), ("23:59", time(23, 59))]
)
def test_parse_at(text: str, at: time) -> None:
    assert parse_at(text) == at


@pytest.mark.parametrize("text", ["7", "24:00", "07:60", "7pm", ""])
def test_parse_at_refuses(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_at(text)
    assert info.value.setting == "--mail-at"


@pytest.mark.parametrize(
    ("zone", "now", "day"),
    [
        ("Europe/Berlin", DAY1_BEFORE, None),
        ("Europe/Berlin", DAY1_AFTER, date(2026, 11, 26)),
        ("Asia/Tokyo", datetime(2026, 11, 26, 23, 30, tzinfo=UTC), date(2026, 11, 27)),
    ],
    ids=["berlin_0659_not_due", "berlin_0700_due", "tokyo_0830_is_the_next_day_there"],
)
def test_due_day_in_the_configured_zone(zone: str, now: datetime, day: date | None) -> None:
    target = mail.SmtpTarget(host="h", port=25, security="insecure")
    assert _daily(target).due_day(Settings(timezone=zone), now) == day


def test_sends_once_a_day_after_the_hour(settings: Settings, smtp: SmtpServer) -> None:
    daily = _daily(mail.smtp_target())
    assert daily.maybe_send(settings, DAY1_BEFORE) is False
    assert smtp.inbox.connections == 0
    assert daily.maybe_send(settings, DAY1_AFTER) is True
    assert daily.maybe_send(settings, DAY1_AFTER.replace(hour=15)) is False
    assert len(smtp.inbox.messages) == 1
    assert daily.maybe_send(settings, DAY2_AFTER) is True
    assert len(smtp.inbox.messages) == 2
    records = sends(settings)
    assert [(r.day, r.attempts, r.last_error) for r in records] == [
        (date(2026, 11, 27), 1, None),
        (date(2026, 11, 26), 1, None),
    ]
    assert all(r.sent_at is not None for r in records)


def test_two_runners_send_once(settings: Settings, smtp: SmtpServer) -> None:
    runners = [_daily(mail.smtp_target()) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list[bool] = []

    def cycle(daily: DailyMail) -> None:
        barrier.wait()
        results.append(daily.maybe_send(settings, DAY1_AFTER))

    threads = [threading.Thread(target=cycle, args=(d,)) for d in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]
    assert len(smtp.inbox.messages) == 1
    # and later cycles of either runner do not send it again
    assert [d.maybe_send(settings, DAY1_AFTER.replace(hour=12)) for d in runners] == [False, False]
    assert len(smtp.inbox.messages) == 1


def test_an_smtp_failure_is_logged_recorded_and_retried(
    settings: Settings, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    down = mail.SmtpTarget(
        host="127.0.0.1",
        port=smtp_server.free_port(),
        security="starttls",
        user=USER,
        password=PASSWORD,
    )
    with caplog.at_level(logging.ERROR, logger="acme_mv"):
        assert _daily(down).maybe_send(settings, DAY1_AFTER) is False
        assert _daily(down).maybe_send(settings, DAY1_AFTER) is False
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert (
        "the reports mail of 2026-11-26 is not sent (attempt 2), retrying next cycle" in errors[1]
    )
    assert all(PASSWORD not in e for e in errors)
    (record,) = sends(settings)
    assert (record.sent_at, record.attempts) == (None, 2)
    assert (
        record.last_error is not None and "Cannot send through the SMTP server" in record.last_error
    )
    # the server is back: the next cycle sends it, once
    daily = _daily(mail.smtp_target())
    assert daily.maybe_send(settings, DAY1_AFTER.replace(hour=8)) is True
    assert daily.maybe_send(settings, DAY1_AFTER.replace(hour=9)) is False
    assert len(smtp.inbox.messages) == 1
    (record,) = sends(settings)
    assert record.sent_at is not None and record.attempts == 3 and record.last_error is None


def test_run_mails_once(db_url: str, cli_env: Callable[..., None], smtp: SmtpServer) -> None:
    cli_env(database_url=db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(DATA)
    for _ in range(2):
        res = run("run", "--once", "--mail-at", "00:00", "--mail-to", "lead@example.com")
        assert res.exit_code == 0, res.stderr
    (msg,) = smtp.inbox.messages
    attached = {
        str(p.get_filename()).split("_result_")[0]: p.get_payload(decode=True)
        for p in msg.iter_attachments()
    }
    assert attached == {name: text.encode() for name, text in EXPECTED.items()}


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--mail-at", "07:00"], "--mail-at needs --mail-to", 1),
        (["--mail-at", "7pm", "--mail-to", "lead@example.com"], "'7pm' is not a time of day", 1),
        (["--mail-to", "lead@"], "Bad email address 'lead@'", 2),
    ],
    ids=["no_recipient", "bad_time", "bad_address"],
)
def test_run_checks_the_mail_options_at_start(
    db_url: str,
    cli_env: Callable[..., None],
    smtp: SmtpServer,
    args: list[str],
    message: str,
    code: int,
) -> None:
    cli_env(database_url=db_url)
    res = run("run", "--once", *args)
    assert res.exit_code == code
    assert message in res.stderr
    with psycopg.connect(db_url) as conn:  # nothing ran
        assert conn.execute("SELECT count(*) FROM staging.sync_batches").fetchone() == (0,)
