"""``acme-mv verify``: recompute every report from scratch and diff it with the union views.

Two comparisons, both full scans (a diagnostic, not a step of every cycle):

1. every report group from scratch over the latest-state tables
   (``staging.orders_state``, ``staging.order_items_state``) against the
   union views the readers query (``analytics.open_orders``,
   ``analytics.pending_items``, ``analytics.pending_orders_by_customer``)
   plus the deltas of the batches synced since the last refresh (so verify
   holds between a sync and the next refresh too);
2. the latest-state tables against the latest staged version of every key
   (a tombstone: the key must be absent); state rows of batches older than
   the oldest kept partition are left out (compaction dropped their versions).

Together: the reports equal the reports computed on the latest staged
versions. Any difference raises :class:`~acme_mv.errors.VerifyFailed`
(exit code 6) naming the count and the first differing groups.

The reports must also include every committed batch: when the last refresh
is older than the newest batch, :class:`~acme_mv.errors.ReportsBehind` (exit
code 6 too) names both batches (``behind_ok=True`` checks the comparisons
only, which hold between a batch and the next refresh).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from acme_mv.config import Settings
from acme_mv.db import Conn, connection, one_value
from acme_mv.errors import ReportsBehind, VerifyFailed
from acme_mv.reports import registry
from acme_mv.reports.refresh import behind
from acme_mv.revision import require_head

#: differing groups named in the error message
SHOWN = 5

#: what readers see of a summary (its union view) plus the deltas of the batches no refresh
#: included yet; ``%(included)s`` is the newest batch the last refresh included
_HAVE = """
SELECT {keys}, sum(n) FROM (
    SELECT {keys}, {column} AS n FROM {view}
    UNION ALL SELECT {keys}, n FROM {delta} WHERE batch_id > %(included)s
) AS u GROUP BY {keys} HAVING sum(n) <> 0
"""


def _have(s: registry.Summary) -> sql.Composable:
    schema, view = s.view.split(".")
    return sql.SQL(_HAVE).format(
        keys=s.columns,
        column=sql.Identifier(s.column),
        view=sql.Identifier(schema, view),
        delta=s.table("delta"),
    )


#: union view name -> (what readers see plus the undelivered deltas, the same from scratch, keys),
#: one per summary of views/summaries/ (acme_mv.reports.registry)
REPORTS: dict[str, tuple[sql.Composable, str, int]] = {
    s.view.split(".")[1]: (_have(s), s.from_state, len(s.keys)) for s in registry.summaries()
}

#: table -> (the latest kept live version of every key, the state), same columns
STATES: dict[str, tuple[str, str]] = {
    "orders_state": (
        "SELECT order_id, delivery_date, customer_id, status, _batch_id FROM ("
        " SELECT DISTINCT ON (order_id) * FROM staging.orders "
        "ORDER BY order_id, _batch_id DESC) AS o"
        " WHERE NOT _deleted",
        "SELECT order_id, delivery_date, customer_id, status, _batch_id FROM staging.orders_state"
        " WHERE _batch_id >= (SELECT min(from_batch) FROM "
        "staging.version_partitions WHERE table_name = 'orders')",
    ),
    "order_items_state": (
        "SELECT order_item_id, order_id, product_id, quanity, _batch_id FROM ("
        " SELECT DISTINCT ON (order_item_id) * FROM staging.order_items "
        "ORDER BY order_item_id, _batch_id DESC) AS i"
        " WHERE NOT _deleted",
        "SELECT order_item_id, order_id, product_id, "
        "quanity, _batch_id FROM staging.order_items_state"
        " WHERE _batch_id >= (SELECT min(from_batch) FROM "
        "staging.version_partitions WHERE table_name = 'order_items')",
    ),
}


@dataclass(frozen=True, kw_only=True)
class Difference:
    """One group (or state row) where the two sides differ; None: absent on that side."""

    what: str
    key: tuple[object, ...]
    have: object
    want: object

    def describe(self) -> str:
        key = ", ".join("NULL" if k is None else str(k) for k in self.key)
        return f"{self.what} ({key}): have {self.have}, from scratch {self.want}"


@dataclass(frozen=True, kw_only=True)
class VerifyResult:
    groups: int
    state_rows: int
    differences: list[Difference]


_DIFF = """
WITH have AS ({have}), want AS ({want})
SELECT 'have', * FROM (SELECT * FROM have EXCEPT ALL SELECT * FROM want) AS a
UNION ALL
SELECT 'want', * FROM (SELECT * FROM want EXCEPT ALL SELECT * FROM have) AS b
"""


def _diff(
    conn: Conn,
    what: str,
    have: sql.Composable,
    want: sql.Composable,
    *,
    nkeys: int,
    included: int = 0,
) -> list[Difference]:
    rows = conn.execute(
        sql.SQL(_DIFF).format(have=have, want=want), {"included": included}
    ).fetchall()
    found: dict[tuple[object, ...], dict[str, object]] = {}
    for side, *cols in rows:
        key = tuple(cols[:nkeys])
        value = cols[nkeys] if len(cols) == nkeys + 1 else tuple(cols[nkeys:])
        found.setdefault(key, {})[str(side)] = value
    return [
        Difference(what=what, key=k, have=v.get("have"), want=v.get("want"))
        for k, v in sorted(found.items(), key=lambda kv: [str(x) for x in kv[0]])
    ]


def _count(conn: Conn, query: sql.Composable, included: int) -> int:
    return one_value(
        conn,
        sql.SQL("SELECT count(*) FROM ({}) AS q").format(query),
        {"included": included},
        kind=int,
    )


def compare(conn: Conn) -> VerifyResult:
    """Both comparisons on ``conn`` (run it in one REPEATABLE READ transaction)."""
    differences: list[Difference] = []
    groups = state_rows = 0
    included = one_value(
        conn,
        "SELECT coalesce(refreshed_batch_id, historic_batch_id, 0) FROM analytics.snapshot",
        kind=int,
    )
    for name, (view, scratch, nkeys) in REPORTS.items():
        # the statements are named constants of this module and files of views/summaries/
        want = sql.SQL("SELECT * FROM ({}) AS s WHERE s.n > 0").format(sql.SQL(scratch))
        differences += _diff(conn, name, view, want, nkeys=nkeys, included=included)
        groups += _count(conn, view, included)
    for name, (latest, state) in STATES.items():
        differences += _diff(conn, f"staging.{name}", sql.SQL(state), sql.SQL(latest), nkeys=1)
        state_rows += _count(conn, sql.SQL(state), included)
    return VerifyResult(groups=groups, state_rows=state_rows, differences=differences)


def verify(settings: Settings, *, behind_ok: bool = False) -> VerifyResult:
    """Raise :class:`VerifyFailed` unless the reports equal their from-scratch computation, and
    :class:`ReportsBehind` when they miss a committed batch (unless ``behind_ok``)."""
    with connection(settings.database_url, role="warehouse", autocommit=True) as conn:
        require_head(conn)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            late = behind(conn)
            result = compare(conn)
    if result.differences:
        n = len(result.differences)
        shown = "; ".join(d.describe() for d in result.differences[:SHOWN])
        more = f"; and {n - SHOWN} more" if n > SHOWN else ""
        raise VerifyFailed(f"verify: {n} differing rows: {shown}{more}", differences=n)
    if late is not None and not behind_ok:
        raise ReportsBehind(
            f"verify: the reports are behind staging: refreshed up to batch {late.included}, "
            f"staging holds batches up to {late.newest}; run acme-mv refresh "
            "(a running acme-mv run refreshes after each batch)",
            refreshed_batch_id=late.included,
            newest_batch_id=late.newest,
        )
    return result
