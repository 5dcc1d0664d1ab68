"""``acme-mv grant-reader``: a least-privilege role for the report readers."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from acme_mv.cli import common
from acme_mv.config import describe_target

log = logging.getLogger("acme_mv.cli")


def grant_reader(
    role: Annotated[
        str, typer.Argument(help="An existing role (CREATE ROLE ... LOGIN PASSWORD ... first).")
    ],
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the GRANT statements instead of running them.")
    ] = False,
) -> None:
    """Let ROLE read the four reports (and export them), nothing else: never staging.

    USAGE on the schema analytics, SELECT on the report views and on what
    `acme-mv export` reads. Run it as the role that ran `acme-mv migrate`; the
    grants survive later migrations that replace a view.

    Examples:

      acme-mv grant-reader report_reader

      acme-mv grant-reader report_reader --sql
    """
    from acme_mv import grants as api

    if sql:
        common.out.print(api.render(role), end="", markup=False, highlight=False)
        return
    settings = common.settings()
    granted = api.grant_reader(settings.database_url, role)
    log.info(
        "%s may now read %s on %s", role, ", ".join(granted), describe_target(settings.database_url)
    )


def register(app: typer.Typer) -> None:
    app.command("grant-reader")(grant_reader)
