"""Views as values, the pinned migration SQL, and replacing a materialized view safely."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from acme_mv import migrate, paths
from acme_mv.config import Settings
from acme_mv.reports import views
from acme_mv.reports.refresh import refresh
from acme_mv.reports.verify import verify
from acme_mv.reports.views import View
from tests.support.staging_copy import copy_batch
from tests.support.view_changes import open_orders_historic_change

ROOT = Path(__file__).resolve().parent.parent
PINNED_0002 = ROOT / "migrations" / "sql" / "0002"


def test_a_file_is_a_value() -> None:
    v = View.from_file(PINNED_0002 / "analytics.open_orders_current.sql")
    assert (v.schema, v.name, v.kind, v.unique) == (
        "analytics",
        "open_orders_current",
        "materialized",
        ("delivery_date", "status"),
    )
    assert v.definition.startswith("SELECT") and not v.definition.endswith(";")
    create = v.create()
    assert create[0].startswith(
        'CREATE MATERIALIZED VIEW "analytics"."open_orders_current" AS\nSELECT'
    )
    assert create[1] == (
        'CREATE UNIQUE INDEX "open_orders_current_key" ON "analytics"."open_orders_current" '
        '("delivery_date", "status") NULLS NOT DISTINCT'
    )
    assert v.drop() == 'DROP MATERIALIZED VIEW "analytics"."open_orders_current"'


def test_a_materialized_view_without_a_unique_header_is_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        View.from_sql("-- kind: materialized\nSELECT 1 AS x", qualified="analytics.x")


def test_load_dir_orders_by_dependency() -> None:
    order = [v.qualified for v in views.load_dir(PINNED_0002)]
    assert order.index("analytics.changed_orders") < order.index("analytics.open_orders_current")
    assert "analytics.open_orders_historic" in order
    order = [v.qualified for v in views.load_dir()]
    assert (
        order.index("analytics.open_orders")
        < order.index("analytics.open_orders_by_date")
        < order.index("analytics.top_dates")
    )


_SHAPE = """
SELECT pg_get_viewdef(c.oid),
       array_agg((a.attname, format_type(a.atttypid, a.atttypmod))::text ORDER BY a.attnum)
FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0
WHERE c.oid = %s::regclass
GROUP BY c.oid
"""


def test_the_database_holds_what_the_files_say(db_url: str) -> None:
    """Each object of views/ is in the database with its kind, its unique index, and the query
    of its file: the server deparses the file's SQL (as a throwaway view, in a transaction rolled
    back) and the deployed object's to the same text, with the same column names and types."""
    with psycopg.connect(db_url) as conn:
        for v in views.load_dir():
            db = View.from_database(conn, v.schema, v.name)
            assert (db.kind, db.unique) == (v.kind, v.unique), v.qualified
            deployed = conn.execute(_SHAPE, (v.qualified,)).fetchone()
            with conn.transaction(force_rollback=True):
                conn.execute(f"CREATE TEMP VIEW file_view AS {v.definition}")
                from_file = conn.execute(_SHAPE, ("pg_temp.file_view",)).fetchone()
            assert deployed == from_file, v.qualified


def _latest_pinned() -> dict[str, View]:
    newest = sorted((ROOT / "migrations" / "sql").iterdir())[-1]
    return {v.qualified: v for v in views.load_dir(newest)}


def test_the_head_revisions_pinned_copies_equal_views() -> None:
    """Edit views/reports/*.sql only together with a migration that pins the new text (the
    newest pinned folder holds every view of the head revision: a view it drops is gone from
    views/reports/). Compared as values (what a migration creates): the header comments of
    views/reports/ (prose, the `-- report:` registry line) may change without a migration."""
    current = {v.qualified: v for v in views.load_dir(paths.views_dir() / "reports")}
    assert _latest_pinned() == current


def test_migrate_sql_shows_the_views() -> None:
    text = migrate.render_sql()
    assert 'CREATE MATERIALIZED VIEW "analytics"."open_orders_historic"' in text
    assert 'CREATE UNIQUE INDEX "pending_items_current_key"' in text
    assert 'CREATE VIEW "analytics"."top_customers"' in text
    assert "CREATE TABLE analytics.snapshot" in text


def _counts(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return [
            tuple(r)
            for r in conn.execute("SELECT * FROM analytics.open_orders ORDER BY 1, 2").fetchall()
        ]


def test_upgrade_downgrade_upgrade_with_data(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO operations.orders (delivery_date, status) VALUES (NULL, 'PENDING'), "
            "('2026-12-01', 'PENDING')"
        )
    copy_batch(db_url, db_url)
    settings = Settings(database_url=db_url)
    refresh(settings)
    before = _counts(db_url)
    assert len(before) == 2
    migrate.downgrade(db_url, "0001_staging")
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT to_regnamespace('analytics')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM staging.orders").fetchone() == (2,)
    migrate.upgrade(db_url, "0002_analytics")
    assert _counts(db_url) == []  # 0002 recreated its views empty: never snapshotted
    migrate.upgrade(db_url)
    assert _counts(db_url) == before  # 0003 backfilled the state and the summaries from staging
    refresh(settings)
    assert _counts(db_url) == before
    verify(settings)
    migrate.downgrade(db_url, "0002_analytics")  # 0002's views, rebuilt from staging as of B
    assert _counts(db_url) == before
    migrate.upgrade(db_url)
    assert _counts(db_url) == before


def test_replace_view_keeps_concurrent_refresh_of_a_materialized_view_working(db_url: str) -> None:
    """A throw-away migration step at revision 0002: replace open_orders_historic by a new text."""
    migrate.downgrade(db_url, "0002_analytics")
    old, new, dependants = open_orders_historic_change(PINNED_0002)
    assert [d.name for d in dependants] == ["open_orders", "open_orders_by_date", "top_dates"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO operations.orders (delivery_date, status) VALUES (NULL, 'PENDING')"
        )
        with conn.transaction():
            views.replace_view(conn, old, new, dependants)
        # pg_get_viewdef qualifies the column on PostgreSQL 15 (count(o.order_id)), not on 18
        assert re.search(
            r"count\((o\.)?order_id\)",
            View.from_database(conn, "analytics", "open_orders_historic").definition,
        )
        assert View.from_database(conn, "analytics", "open_orders_historic").unique == old.unique
        conn.execute(
            "INSERT INTO staging.orders (order_id, status, _batch_id) VALUES (1, 'PENDING', 1)"
        )
        conn.execute("UPDATE analytics.snapshot SET historic_batch_id = 1")
        conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY analytics.open_orders_historic")
    assert _counts(db_url) == [(None, "PENDING", 1)]


def test_concurrent_refresh_handles_null_keys(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO operations.orders (delivery_date, status) VALUES (NULL, 'PENDING')"
        )
    settings = Settings(database_url=db_url)
    copy_batch(db_url, db_url)
    refresh(settings)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO operations.orders (delivery_date, status) VALUES (NULL, 'PENDING')"
        )
    copy_batch(db_url, db_url)
    refresh(settings, mode="historic")
    refresh(settings, mode="historic")
    assert _counts(db_url) == [(None, "PENDING", 2)]
