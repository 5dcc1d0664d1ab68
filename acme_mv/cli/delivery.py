"""``acme-mv mail`` and ``acme-mv serve``: thin skins over :mod:`acme_mv.delivery`.

``run --mail-at/--mail-to`` (in :mod:`acme_mv.cli.run`) builds its hook with
:func:`daily_mail_hook`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Annotated, Any

import typer

from acme_mv.cli import common
from acme_mv.config import validate_conninfo
from acme_mv.errors import ConfigError
from acme_mv.reports import registry

log = logging.getLogger("acme_mv.cli")


def mail(
    to: Annotated[
        list[str],
        typer.Option("--to", help="Recipient(s): ADDR[,ADDR]; repeatable.", show_default=False),
    ],
    report: Annotated[
        list[str] | None,
        typer.Option(
            "--report",
            "-r",
            help=(
                "Send only this report (repeatable): "
                f"{', '.join(r.name for r in registry.reports())}."
            ),
            show_default=False,
        ),
    ] = None,
    all_reports: Annotated[
        bool, typer.Option("--all", help="Send every report (the default).")
    ] = False,
    sender: Annotated[
        str | None,
        typer.Option(
            "--from",
            envvar="ACME_MV_MAIL_FROM",
            show_envvar=True,
            help="Sender address.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Email the reports as CSV attachments (the files
    `acme-mv export` writes), with an HTML summary.

    SMTP settings come from the environment: ACME_MV_SMTP_URL (smtp://user@host:587
    STARTTLS, smtps://user@host:465 TLS, smtp+insecure://host:25 a local relay without
    encryption), the password from ACME_MV_SMTP_PASSWORD or ~/.netrc.

    Examples:

      ACME_MV_SMTP_URL=smtp://reports@mail.example.com:587 acme-mv mail --to lead@example.com

      acme-mv mail --to a@example.com,b@example.com --report open_orders
    """
    from acme_mv.delivery import mail as api

    if report and all_reports:
        raise ConfigError("Use either --report or --all, not both", setting="--all")
    recipients = api.parse_addresses(to)  # a bad address fails before anything else
    target = api.smtp_target()
    result = api.mail_reports(
        common.settings(),
        to=[str(a) for a in recipients],
        target=target,
        names=report or None,
        sender=sender,
    )
    for name in result.attachments:
        common.out.print(name, markup=False, highlight=False)
    log.info(
        "sent to %s (data as of %s)",
        ", ".join(result.recipients),
        result.as_of.isoformat(timespec="seconds"),
    )
    if result.refused:  # some recipients got it: not retried, but not a success either
        log.error(
            "the SMTP server refused %s; the others got the message", ", ".join(result.refused)
        )
        raise typer.Exit(1)


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")
    ] = 8765,
    reader_url: Annotated[
        str | None,
        typer.Option(
            "--reader-url",
            envvar="ACME_MV_READER_URL",
            show_envvar=True,
            help=(
                "Warehouse URL of a report-reader role (see grant-reader). Default: --database-url."
            ),
            show_default=False,
        ),
    ] = None,
    stale_after: Annotated[
        str,
        typer.Option("--stale-after", help="The freshness turns red past this age: 60s, 5m, 1h."),
    ] = "60s",
) -> None:
    """Serve the live dashboard: the totals, the four reports, a chart, the freshness; read-only.

    The page updates itself when a refresh lands; each report downloads as CSV.
    Today and the overdue orders (delivery date before today) are in --timezone.
    Every warehouse transaction is read-only; one snapshot check per second per
    server, one read per refresh, whatever the number of viewers.

    Examples:

      acme-mv serve

      ACME_MV_READER_URL=postgresql://reports@warehouse/acme acme-mv serve --host 0.0.0.0 --port 8080
    """  # noqa: E501 - one example command line of the help; wrapping it would change the help
    from acme_mv.delivery.dashboard.app import serve as api_serve

    stale_s = common.duration_option(stale_after, "--stale-after")
    settings = common.settings()
    url = reader_url or settings.database_url
    if reader_url:
        validate_conninfo(reader_url, what="reader URL")
    else:
        log.info("no --reader-url / ACME_MV_READER_URL: reading with the warehouse role, read-only")
    api_serve(
        url,
        host=host,
        port=port,
        stale_after=stale_s,
        timezone=settings.timezone,
    )


def daily_mail_hook(mail_at: str | None, mail_to: list[str] | None) -> Callable[[Any], None] | None:
    """The ``on_cycle`` hook of ``run --mail-at --mail-to``; None when no mail is asked for.

    Everything the send needs (addresses, SMTP settings, password) is checked now.
    """
    to = [t for t in (mail_to or []) if t.strip()]
    if not to and not mail_at:
        return None
    if not to:
        raise ConfigError("--mail-at needs --mail-to (or ACME_MV_MAIL_TO)", setting="--mail-to")
    from acme_mv.delivery import mail as api
    from acme_mv.delivery.schedule import DailyMail

    daily = DailyMail.from_options(
        at=mail_at or "07:00",
        to=to,
        target=api.smtp_target(),
        sender=os.environ.get(api.MAIL_FROM_ENV) or None,
    )
    settings = common.settings()
    log.info(
        "mailing the reports to %s daily after %s (%s)",
        ", ".join(daily.to),
        daily.at.strftime("%H:%M"),
        settings.timezone,
    )

    def hook(cycle: Any) -> None:
        daily.maybe_send(settings)

    return hook


def register(app: typer.Typer) -> None:
    """Add ``mail`` and ``serve`` to the app."""
    app.command("mail")(mail)
    app.command("serve")(serve)
