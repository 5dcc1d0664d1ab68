from __future__ import annotations

import psycopg
import pytest

from acme_mv import migrate
from acme_mv.errors import MigrationFailed
from tests.support.roles import RoleFactory


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
            "c.relnamespace WHERE n.nspname IN ('staging', 'analytics') AND "
            "c.relkind IN ('r', 'p', 'v', 'm')"
        ).fetchall()
    return {str(r[0]) for r in rows}


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    first = _tables(empty_url)
    assert "staging.orders" in first
    with psycopg.connect(empty_url) as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
    migrate.downgrade(empty_url, "base")
    assert _tables(empty_url) == set()
    with psycopg.connect(empty_url) as conn:
        assert migrate.current_revision(conn) is None
    migrate.upgrade(empty_url)
    assert _tables(empty_url) == first


def test_sql_renders_offline() -> None:
    text = migrate.render_sql()
    assert "CREATE TABLE staging.orders" in text
    assert "INSERT INTO acme_mv.alembic_version" in text


def _version_tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_tables WHERE "
            "tablename = 'alembic_version'"
        ).fetchall()
    return {str(r[0]) for r in rows}


def test_the_version_table_lives_in_the_acme_mv_schema(warehouse_url: str) -> None:
    assert _version_tables(warehouse_url) == {"acme_mv.alembic_version"}


def test_a_version_table_left_in_public_is_read_then_moved(empty_url: str) -> None:
    """A warehouse migrated by an earlier acme-mv has public.alembic_version (Alembic's default)."""
    # the last revision an acme-mv with the version table in public knew
    migrate.upgrade(empty_url, "0002_analytics")
    with psycopg.connect(empty_url) as conn:
        conn.execute("ALTER TABLE acme_mv.alembic_version SET SCHEMA public")
        conn.execute("DROP SCHEMA acme_mv")
    with psycopg.connect(empty_url) as conn:
        assert migrate.current_revision(conn) == "0002_analytics"
    migrate.upgrade(empty_url)
    assert _version_tables(empty_url) == {"acme_mv.alembic_version"}
    with psycopg.connect(empty_url) as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()


def test_another_applications_version_table_in_public_is_left_alone(empty_url: str) -> None:
    """In a one-database deployment public.alembic_version may be the source application's."""
    with psycopg.connect(empty_url) as conn:
        conn.execute("CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO public.alembic_version VALUES ('their_app_0042')")
    with psycopg.connect(empty_url) as conn:
        assert migrate.current_revision(conn) is None
    migrate.upgrade(empty_url)
    assert _version_tables(empty_url) == {"acme_mv.alembic_version", "public.alembic_version"}
    with psycopg.connect(empty_url) as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
        assert conn.execute("SELECT version_num FROM public.alembic_version").fetchall() == [
            ("their_app_0042",)
        ]


def test_a_failed_migration_is_one_short_line_naming_the_grant(
    empty_url: str, make_role: RoleFactory
) -> None:
    """A role that owns nothing: PostgreSQL's message and the fix, not SQLAlchemy's
    statement dump."""
    role = make_role("acme_mig_nopriv")
    with pytest.raises(MigrationFailed) as caught:
        migrate.upgrade(role.url(empty_url))
    message = str(caught.value)
    assert "\n" not in message
    assert len(message) < 300, message
    assert "permission denied for database" in message  # CREATE SCHEMA acme_mv
    assert "must own the schemas acme_mv, staging and analytics" in message
    assert "CREATE" not in message and "[SQL" not in message
    assert caught.value.sqlstate == "42501"
    assert role.password not in message


def test_an_unknown_revision_is_one_line(warehouse_url: str) -> None:
    with pytest.raises(MigrationFailed, match=r"^Migrating the warehouse to nope failed: .*'nope'"):
        migrate.upgrade(warehouse_url, "nope")
