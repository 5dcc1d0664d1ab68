"""``acme-mv grant-reader``: a role that reads and exports the reports, never staging,
and keeps doing so after a migration replaces a view."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, pool

from acme_mv.reports import views
from tests.support.cli_runner import run
from tests.support.delivery_data import EXPECTED
from tests.support.roles import LoginRole, RoleFactory
from tests.support.view_changes import open_orders_by_date_change

#: what a reader must not read: staging, and the tables under the reports
FORBIDDEN = (
    "staging.orders",
    "staging.orders_state",
    "analytics.open_orders_delta",
    "staging.orders_latest",
    "staging.sync_state",
    "analytics.open_orders_historic",
    "analytics.pending_items_current",
)


@pytest.fixture
def reader(refreshed: str, make_role: RoleFactory, cli_env: Callable[..., None]) -> LoginRole:
    role = make_role("acme_report_reader")
    cli_env(database_url=refreshed)
    res = run("grant-reader", role.name)
    assert res.exit_code == 0, res.stderr
    assert f"{role.name} may now read" in res.stderr
    return role


def export_all_as(
    role: LoginRole, url: str, out: Path, cli_env: Callable[..., None]
) -> dict[str, str]:
    cli_env(database_url=role.url(url))
    out.mkdir()
    res = run("export", "--all", "--output-dir", str(out))
    assert res.exit_code == 0, res.stderr
    assert role.password not in res.stderr + res.stdout
    return {path.name.split("_result_")[0]: path.read_text() for path in out.iterdir()}


def assert_cannot_read(role: LoginRole, url: str, relation: str) -> None:
    with (
        psycopg.connect(role.url(url)) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(f"SELECT * FROM {relation} LIMIT 1")


def test_a_reader_exports_every_report(
    reader: LoginRole, refreshed: str, tmp_path: Path, cli_env: Callable[..., None]
) -> None:
    assert export_all_as(reader, refreshed, tmp_path / "out", cli_env) == EXPECTED
    with psycopg.connect(reader.url(refreshed)) as conn:
        rows = conn.execute("SELECT delivery_date, open_orders FROM analytics.top_dates").fetchall()
        assert len(rows) == 3
        assert conn.execute("SELECT current_user").fetchone() == (reader.name,)


@pytest.mark.parametrize("relation", FORBIDDEN)
def test_a_reader_cannot_read_staging_or_the_materialized_views(
    reader: LoginRole, refreshed: str, relation: str
) -> None:
    assert_cannot_read(reader, refreshed, relation)


def test_a_reader_has_no_privilege_on_staging_at_all(reader: LoginRole, refreshed: str) -> None:
    with psycopg.connect(refreshed) as conn:
        row = conn.execute(
            "SELECT has_schema_privilege(%(r)s, 'staging', 'USAGE'), has_schema_privilege(%(r)s, "
            "'analytics', 'CREATE'), has_table_privilege(%(r)s, 'analytics.open_orders', 'INSERT')",
            {"r": reader.name},
        ).fetchone()
    assert row == (False, False, False)


def replace_open_orders_by_date(url: str, *, through: str = "psycopg") -> None:
    """A later migration's step: replace a view the reports read (and its dependants).

    ``through="alembic"``: with Alembic's ``op``, as a migration does (its
    ``execute`` goes through SQLAlchemy's ``text()``).
    """
    old, new, dependants = open_orders_by_date_change()
    assert [d.name for d in dependants] == ["top_dates"]
    with psycopg.connect(url) as conn:
        oid_before = conn.execute("SELECT to_regclass('analytics.top_dates')::oid").fetchone()
    if through == "alembic":
        engine = create_engine(
            "postgresql+psycopg://", creator=lambda: psycopg.connect(url), poolclass=pool.NullPool
        )
        with engine.begin() as sa_conn:
            views.replace_view(
                Operations(MigrationContext.configure(sa_conn)), old, new, dependants
            )
        engine.dispose()
    else:
        with psycopg.connect(url) as conn, conn.transaction():
            views.replace_view(conn, old, new, dependants)
    with psycopg.connect(url) as conn:
        assert (
            conn.execute("SELECT to_regclass('analytics.top_dates')::oid").fetchone() != oid_before
        )


@pytest.mark.parametrize("through", ["psycopg", "alembic"])
def test_grants_survive_a_migration_that_replaces_a_view(
    reader: LoginRole, refreshed: str, tmp_path: Path, cli_env: Callable[..., None], through: str
) -> None:
    replace_open_orders_by_date(refreshed, through=through)
    assert export_all_as(reader, refreshed, tmp_path / "after", cli_env) == EXPECTED
    assert_cannot_read(
        reader, refreshed, "analytics.open_orders_historic"
    )  # no grant the old one lacked


def test_grants_of_other_roles_and_public_survive_too(
    refreshed: str, make_role: RoleFactory
) -> None:
    """Whatever a DBA granted on a replaced object comes back, grant option included."""
    analyst = make_role("acme_analyst")
    with psycopg.connect(refreshed, autocommit=True) as conn:
        conn.execute(f"GRANT USAGE ON SCHEMA analytics TO {analyst.name}")
        conn.execute(f"GRANT SELECT ON analytics.top_dates TO {analyst.name} WITH GRANT OPTION")
        conn.execute("GRANT SELECT ON analytics.open_orders_by_date TO PUBLIC")
    replace_open_orders_by_date(refreshed)
    with psycopg.connect(refreshed) as conn:
        row = conn.execute(
            "SELECT has_table_privilege(%(a)s, 'analytics.top_dates', 'SELECT WITH GRANT OPTION'), "
            "has_table_privilege('public', 'analytics.open_orders_by_date', 'SELECT'), "
            "has_table_privilege('public', 'analytics.top_dates', 'SELECT')",
            {"a": analyst.name},
        ).fetchone()
    assert row == (True, True, False)


def test_grant_reader_of_an_unknown_role_is_one_line(
    warehouse_url: str, cli_env: Callable[..., None]
) -> None:
    cli_env(database_url=warehouse_url)
    res = run("grant-reader", "no_such_reader_role")
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "There is no role 'no_such_reader_role' on the warehouse" in lines[0]


def test_grant_reader_by_a_role_that_does_not_own_the_views_is_one_line(
    warehouse_url: str, make_role: RoleFactory, cli_env: Callable[..., None]
) -> None:
    stranger = make_role("acme_stranger")
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        conn.execute(f"GRANT USAGE ON SCHEMA acme_mv TO {stranger.name}")
        conn.execute(f"GRANT SELECT ON acme_mv.alembic_version TO {stranger.name}")
    cli_env(database_url=stranger.url(warehouse_url))
    res = run("grant-reader", stranger.name)
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Cannot grant the reports to" in lines[0] and "ran `acme-mv migrate`" in lines[0]


def test_grant_reader_sql_names_no_staging_object() -> None:
    res = run("grant-reader", "report_reader", "--sql")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.startswith(
        'GRANT USAGE ON SCHEMA "analytics", "acme_mv" TO "report_reader";\n'
    )
    assert (
        "staging" not in res.stdout
        and "_historic" not in res.stdout
        and "_current" not in res.stdout
    )
    for report in ("open_orders", "top_dates", "pending_items", "top_customers"):
        assert f'"analytics"."{report}"' in res.stdout
