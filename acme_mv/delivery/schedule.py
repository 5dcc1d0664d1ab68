"""The daily mail of ``acme-mv run --mail-at 07:00 --mail-to ...``.

:meth:`DailyMail.maybe_send` is called once per runner cycle, after the
refresh. On a day (in the configured time zone) whose ``--mail-at`` has
passed, it sends the reports unless ``acme_mv.mail_sends`` says that day's
mail went out already.

Delivery is AT LEAST ONCE, with the duplicate window made as small as it can be:

1. one transaction claims the (day, kind) row (``INSERT ... ON CONFLICT DO
   NOTHING``, then ``SELECT ... FOR UPDATE``) under a transaction-level
   advisory lock taken with ``pg_try_advisory_xact_lock``: a second runner
   does not wait, it skips this cycle and, next time, finds the day sent;
2. inside that transaction the message is handed to the SMTP server;
3. only after the server accepted it (``250`` after ``DATA``) is ``sent_at``
   set, and the transaction commits.

An SMTP failure rolls the claim back; the attempt (count, time, error) is then
recorded in its own transaction and logged as an error, and the next cycle
tries again: a missed send is never lost silently. The one way to get a
duplicate is a crash (or a lost warehouse connection) between the server's
``250`` and the COMMIT, milliseconds. The other choice (commit "sent" first,
then send) would lose the day's mail on any SMTP failure, which the logistics
lead would not notice; a rare duplicate is the better failure.

A day whose send time passed while no runner ran is sent when one starts later
that day; earlier days are not sent retroactively (their data is gone: the
reports show the current state only).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from psycopg.rows import class_row, scalar_row

from acme_mv.config import Settings
from acme_mv.db import Conn, connection, one_value
from acme_mv.delivery import mail
from acme_mv.errors import ConfigError, MailError

log = logging.getLogger(__name__)

#: advisory lock (two-int form) that lets one runner at a time send: 'acme' and 5 for "delivery"
LOCK_CLASS = 0x61636D65
LOCK_MAIL = 5
DEFAULT_KIND = "reports"

_AT = re.compile(r"^\s*(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)\s*$")


def parse_at(text: str) -> time:
    """``"07:00"`` -> 07:00 (24-hour clock, in the configured time zone)."""
    match = _AT.match(text)
    if match is None:
        raise ConfigError(
            f"--mail-at {text!r} is not a time of day such as 07:00 (24-hour HH:MM)",
            setting="--mail-at",
        )
    return time(int(match["h"]), int(match["m"]))


@dataclass(frozen=True, kw_only=True)
class SendRecord:
    day: date
    kind: str
    sent_at: datetime | None
    attempts: int
    last_error: str | None


@dataclass(frozen=True, kw_only=True)
class DailyMail:
    """Send the reports once a day after ``at`` (local time of ``settings.timezone``)."""

    at: time
    to: tuple[str, ...]
    target: mail.SmtpTarget
    sender: str | None = None
    names: tuple[str, ...] | None = None
    kind: str = DEFAULT_KIND

    @classmethod
    def from_options(
        cls, *, at: str, to: str | Sequence[str], target: mail.SmtpTarget, sender: str | None = None
    ) -> DailyMail:
        """Check everything a send will need now, at start-up, not at 07:00."""
        recipients = mail.parse_addresses(to)
        mail.parse_addresses(sender or mail.default_sender())
        return cls(
            at=parse_at(at), to=tuple(str(a) for a in recipients), target=target, sender=sender
        )

    def due_day(self, settings: Settings, now: datetime) -> date | None:
        """The local day whose mail is due at ``now``, or None before ``at``."""
        local = now.astimezone(ZoneInfo(settings.timezone))
        return local.date() if local.time() >= self.at else None

    def maybe_send(self, settings: Settings, now: datetime | None = None) -> bool:
        """Send today's mail if it is due and not sent yet; True when this call sent it."""
        moment = now or datetime.now(UTC)
        day = self.due_day(settings, moment)
        if day is None:
            return False
        with connection(settings.database_url, role="warehouse", autocommit=True) as conn:
            sent = (
                conn.cursor(row_factory=scalar_row)
                .execute(
                    "SELECT sent_at IS NOT NULL FROM "
                    "acme_mv.mail_sends WHERE day = %s AND kind = %s",
                    (day, self.kind),
                )
                .fetchone()
            )  # None: no row yet
            if sent:
                return False
            try:
                with conn.transaction():
                    if not one_value(
                        conn,
                        "SELECT pg_try_advisory_xact_lock(%s, %s)",
                        (LOCK_CLASS, LOCK_MAIL),
                        kind=bool,
                    ):
                        log.info(
                            "another runner is sending the %s mail of %s; skipping", self.kind, day
                        )
                        return False
                    conn.execute(
                        "INSERT INTO acme_mv.mail_sends (day, kind) "
                        "VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        (day, self.kind),
                    )
                    if one_value(  # the row exists: inserted just above, or by another runner
                        conn,
                        "SELECT sent_at IS NOT NULL FROM acme_mv.mail_sends "
                        "WHERE day = %s AND kind = %s FOR UPDATE",
                        (day, self.kind),
                        kind=bool,
                    ):
                        return False
                    result = mail.mail_reports(
                        settings,
                        to=self.to,
                        target=self.target,
                        names=self.names,
                        sender=self.sender,
                        now=moment,
                    )
                    conn.execute(
                        "UPDATE acme_mv.mail_sends SET sent_at = now(), "
                        "recipients = %s, refreshed_batch_id = %s, "
                        "attempts = attempts + 1, last_attempt_at = now(), last_error = NULL "
                        "WHERE day = %s AND kind = %s",
                        (result.recipients, result.refreshed_batch_id, day, self.kind),
                    )
            except MailError as exc:
                attempts = _record_failure(conn, day=day, kind=self.kind, error=str(exc))
                log.error(
                    "the %s mail of %s is not sent (attempt %d), retrying next cycle: %s",
                    self.kind,
                    day,
                    attempts,
                    exc,
                )
                return False
        log.info("sent the %s mail of %s to %s", self.kind, day, ", ".join(self.to))
        return True


def _record_failure(conn: Conn, *, day: date, kind: str, error: str) -> int:
    return one_value(
        conn,
        "INSERT INTO acme_mv.mail_sends AS s (day, kind, attempts, last_attempt_at, last_error) "
        "VALUES (%s, %s, 1, now(), %s) "
        "ON CONFLICT (day, kind) DO UPDATE SET attempts = s.attempts + 1, last_attempt_at = now(), "
        "last_error = EXCLUDED.last_error RETURNING attempts",
        (day, kind, error),
        kind=int,
    )


def sends(settings: Settings) -> list[SendRecord]:
    """Every recorded send, newest day first."""
    with connection(settings.database_url, role="warehouse") as conn:
        return (
            conn.cursor(row_factory=class_row(SendRecord))
            .execute(
                "SELECT day, kind, sent_at, attempts, last_error "
                "FROM acme_mv.mail_sends ORDER BY day DESC, kind"
            )
            .fetchall()
        )
