"""The one registry of summaries and reports (views/ headers) and the SQL files by layer: pure
checks, no database (the reports' results are checked against the oracle elsewhere)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from acme_mv import grants, paths, sqlfiles
from acme_mv.reports import export, refresh, registry, verify
from tests.support import reports_oracle

#: the contract's reports, in its order
CONTRACT = ["open_orders", "top_dates", "pending_items", "top_customers"]


def test_the_reports_are_the_contracts_in_its_order() -> None:
    assert [r.name for r in registry.reports()] == CONTRACT
    assert list(export.REPORTS) == CONTRACT
    assert [r.name for r in registry.reports() if r.ranked] == ["top_dates", "top_customers"]
    assert registry.default_limit() == export.DEFAULT_LIMIT == 3  # "Top 3 is the default"


def test_the_oracle_computes_every_report_of_the_registry() -> None:
    """The oracle keeps its own SQL (independent of views/), but not its own list of reports."""
    names = [r.name for r in registry.reports()]
    assert list(reports_oracle.FROM_SCRATCH) == list(reports_oracle.FROM_VIEWS) == names
    assert list(reports_oracle.TOP_VIEWS) == [r.name for r in registry.reports() if r.ranked]


def test_grant_reader_iterates_the_registry() -> None:
    readable = {f"{s}.{n}" for s, n in grants.READER_RELATIONS}
    assert {v.qualified for v in registry.report_views()} <= readable
    assert {f"analytics.{r.name}" for r in registry.reports()} <= readable


def test_refresh_and_verify_iterate_over_the_summary_files() -> None:
    names = [f.stem for f in sqlfiles.layer("summaries")]
    assert names == ["open_orders", "pending_items", "pending_orders"]
    assert [s.name for s in refresh.SUMMARIES] == names
    assert list(refresh.FROM_STATE) == names
    assert list(verify.REPORTS) == ["open_orders", "pending_items", "pending_orders_by_customer"]
    assert [n for _, _, n in verify.REPORTS.values()] == [2, 1, 1]


def test_every_summary_has_its_deltas_and_a_view(db_url: str) -> None:
    """Each summary of the registry has its delta file (a first batch's delta is the summary
    itself), and its view (in the migrated database) has the summary's column; no delta file
    belongs to no summary."""
    deltas = {f"deltas/{p.name}" for p in (paths.views_dir() / "deltas").glob("*.sql")}
    assert deltas == {f"deltas/{s.name}.sql" for s in registry.summaries()}
    views = {v.qualified for v in registry.report_views()}
    with psycopg.connect(db_url) as conn:
        for s in registry.summaries():
            assert s.view in views, s.name
            cur = conn.execute(
                sql.SQL("SELECT * FROM {} LIMIT 0").format(sql.Identifier(*s.view.split(".")))
            )
            assert s.column in [c.name for c in cur.description or []], s.view


def test_export_ranks_with_the_top_views_own_order() -> None:
    """A ranked report exports its view's SELECT with another LIMIT: the view holds the ranking."""
    for r in registry.reports():
        if not r.ranked:
            continue
        query = export.report_query(r.name, limit=7).as_string()
        assert query == f"{r.ranking} LIMIT 7"
        assert r.view.definition == f"{r.ranking}\nLIMIT {registry.default_limit()}"


def test_inlining_needs_an_alias() -> None:
    assert registry.inline("SELECT * FROM analytics.x AS a", {"analytics.x": "SELECT 1"}) == (
        "SELECT * FROM (SELECT 1) AS a"
    )
    with pytest.raises(ValueError, match="alias"):
        registry.inline("SELECT * FROM analytics.x", {"analytics.x": "SELECT 1"})


def test_a_file_is_a_header_then_sql() -> None:
    f = sqlfiles.parse(
        "-- The thing. More.\n-- keys: a, b\n-- other: prose\nSELECT 1\n", name="summaries/x.sql"
    )
    assert (f.text, f.headers, f.layer, f.stem) == ("SELECT 1", {"keys": "a, b"}, "summaries", "x")
    assert f.first_sentence == "The thing."
    with pytest.raises(ValueError, match="no SQL"):
        sqlfiles.parse("-- only a comment\n", name="state/x.sql")
