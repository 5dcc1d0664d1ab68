"""``acme-mv migrate``: Alembic upgrade/downgrade of the warehouse, or the SQL offline."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from acme_mv.cli import common
from acme_mv.config import describe_target

log = logging.getLogger("acme_mv.cli")


def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL instead of running it (no server needed).")
    ] = False,
    downgrade: Annotated[
        bool,
        typer.Option(
            "--downgrade", help="Migrate down to REVISION (`base` removes every acme-mv object)."
        ),
    ] = False,
) -> None:
    """Create or update every warehouse object (staging tables, views) with Alembic.

    Examples:

      acme-mv migrate

      acme-mv migrate --sql > warehouse.sql

      acme-mv migrate --downgrade base
    """
    from acme_mv import migrate as api

    if sql:
        if downgrade:
            common.out.print(
                api.render_sql(downgrade_to=f"head:{revision}"),
                end="",
                markup=False,
                highlight=False,
            )
        else:
            common.out.print(api.render_sql(revision), end="", markup=False, highlight=False)
        return
    settings = common.settings()
    target = describe_target(settings.database_url)
    if downgrade:
        api.downgrade(settings.database_url, revision)
        log.info("warehouse %s downgraded to %s", target, revision)
    else:
        api.upgrade(settings.database_url, revision)
        log.info(
            "warehouse %s migrated to %s",
            target,
            revision if revision != "head" else api.head_revision(),
        )


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)
