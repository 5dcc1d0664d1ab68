"""A later migration's change to a view, for the tests that replace one."""

from __future__ import annotations

from acme_mv import views
from acme_mv.views import View


def open_orders_historic_change() -> tuple[View, View, list[View]]:
    """(old, new, dependants): open_orders_historic counted by ``order_id`` instead of ``*``."""
    all_views = views.load_dir()
    old = next(v for v in all_views if v.name == "open_orders_historic")
    new = View(
        schema=old.schema,
        name=old.name,
        kind=old.kind,
        unique=old.unique,
        definition=old.definition.replace("count(*)::bigint AS n", "count(o.order_id)::bigint AS n"),
    )
    assert new.definition != old.definition
    return old, new, views.dependants_of(old, all_views)
