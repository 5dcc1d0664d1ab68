"""A later migration's change to a view, for the tests that replace one."""

from __future__ import annotations

from pathlib import Path

from acme_mv.reports import views
from acme_mv.reports.views import View


def _changed(
    directory: Path | None, name: str, old_text: str, new_text: str
) -> tuple[View, View, list[View]]:
    all_views = views.load_dir(directory)
    old = next(v for v in all_views if v.name == name)
    new = View(
        schema=old.schema,
        name=old.name,
        kind=old.kind,
        unique=old.unique,
        definition=old.definition.replace(old_text, new_text),
    )
    assert new.definition != old.definition
    return old, new, views.dependants_of(old, all_views)


def open_orders_historic_change(directory: Path) -> tuple[View, View, list[View]]:
    """(old, new, dependants) at revision 0002 (``directory``: its pinned SQL), where
    open_orders_historic was a materialized view: counted by ``order_id`` instead of ``*``."""
    return _changed(
        directory, "open_orders_historic", "count(*)::bigint AS n", "count(o.order_id)::bigint AS n"
    )


def open_orders_by_date_change() -> tuple[View, View, list[View]]:
    """(old, new, dependants) at head: the ranking behind top_dates, same result, new text."""
    return _changed(
        None,
        "open_orders_by_date",
        "sum(o.open_orders)::bigint AS open_orders",
        "sum(o.open_orders + 0)::bigint AS open_orders",
    )
