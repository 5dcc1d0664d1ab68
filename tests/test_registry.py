"""The one registry of summaries and reports (views/ headers) and the SQL files by layer: pure
checks, no database (the reports' results are checked against the oracle elsewhere)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from acme_mv import grants, paths, sqlfiles
from acme_mv.reports import export, refresh, registry, verify
from acme_mv.staging import apply
from tests.support import reports_oracle

ROOT = Path(__file__).resolve().parent.parent
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


def test_every_summary_has_its_deltas_and_a_view() -> None:
    views = {v.qualified: v for v in registry.report_views()}
    for s in registry.summaries():
        for name in (f"deltas/{s.name}.sql", f"deltas/{s.name}.first.sql"):
            assert sqlfiles.text(name).startswith(f"INSERT INTO analytics.{s.name}_delta "), name
        assert s.view in views, s.name
        assert re.search(rf"\bAS {s.column}\b", views[s.view].definition), s.view


def test_apply_loads_every_file_of_state_and_deltas() -> None:
    """apply.py names each statement of views/state/ at its place in a batch, and runs the two
    delta files of every summary of the registry: none is forgotten, none is extra."""
    named = set(re.findall(r'"(state/[\w.]+\.sql)"', Path(apply.__file__).read_text()))
    assert named == {f"state/{p.name}" for p in (paths.views_dir() / "state").glob("*.sql")}
    deltas = {f"deltas/{p.name}" for p in (paths.views_dir() / "deltas").glob("*.sql")}
    assert deltas == {
        f"deltas/{s.name}{suffix}"
        for s in registry.summaries()
        for suffix in (".sql", ".first.sql")
    }


def _counts_open(text: str) -> bool:
    return "<> 'COMPLETED'" in text


def test_open_and_pending_are_one_predicate_per_summary() -> None:
    """A summary counts open orders (not COMPLETED) or PENDING ones, the same way in its
    from-scratch query, its delta and its first-batch delta, and says which in its header."""
    kinds = {}
    for s in registry.summaries():
        texts = [
            s.from_state,
            sqlfiles.text(f"deltas/{s.name}.sql"),
            sqlfiles.text(f"deltas/{s.name}.first.sql"),
        ]
        is_open = {_counts_open(t) for t in texts}
        is_pending = {"= 'PENDING'" in t for t in texts}
        assert len(is_open) == len(is_pending) == 1 and is_open != is_pending, s.name
        kinds[s.name] = "open" if is_open == {True} else "PENDING"
        assert kinds[s.name] in s.counts, (s.name, s.counts)
    assert kinds == {"open_orders": "open", "pending_items": "open", "pending_orders": "PENDING"}


def test_the_ranking_is_defined_once_in_the_top_views() -> None:
    sources = "\n".join(p.read_text() for p in (ROOT / "acme_mv").rglob("*.py"))
    for r in registry.reports():
        if not r.ranked:
            continue
        order = re.search(r"ORDER BY (.*?)\s+LIMIT", r.view.definition, re.S)
        assert order is not None
        assert order[1] not in sources, f"the ranking of {r.name} is repeated in Python"
        query = export.report_query(r.name, limit=7).as_string()
        assert query == f"{r.ranking} LIMIT 7"


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
