from __future__ import annotations

import psycopg

from acme_mv import migrate


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('staging', 'analytics') AND c.relkind IN ('r', 'p', 'v', 'm')"
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
    assert "INSERT INTO alembic_version" in text
