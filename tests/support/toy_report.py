"""A toy report added the documented way (docs/extending.md, "Adding a report"): its SQL files and
its tables, nothing else. ``python -m tests.support.toy_report VIEWS URL READER READER_URL``
runs the pipeline on it in a child process whose ``views/`` is ``VIEWS`` (the registry and
every module that iterates it read ``views/`` once, when imported) and prints what each step
saw as JSON.

The toy: open orders per customer (summary ``open_by_customer``, report
``analytics.open_by_customer``).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from acme_mv import paths

NAME = "open_by_customer"

#: file of views/ -> its text
FILES = {
    f"summaries/{NAME}.sql": """\
-- analytics.open_by_customer_{historic,current}: open orders per customer (a toy report).
-- keys: customer_id
-- counts: open orders (status not NULL and not COMPLETED)
-- view: analytics.open_by_customer.open_orders
SELECT o.customer_id, count(*)::bigint AS n FROM staging.orders_state AS o
WHERE o.status IS NOT NULL AND o.status <> 'COMPLETED' AND o.customer_id IS NOT NULL
GROUP BY o.customer_id
""",
    f"deltas/{NAME}.sql": """\
-- analytics.open_by_customer_delta: a batch's signed change of open orders per customer.
INSERT INTO analytics.open_by_customer_delta (batch_id, customer_id, n)
SELECT %(batch)s, d.customer_id, sum(d.n)
FROM _acme_order_changes AS c
CROSS JOIN LATERAL (VALUES
    (c.a_customer_id, c.a_status, CASE WHEN c.a_exists THEN 1 ELSE 0 END),
    (c.b_customer_id, c.b_status, CASE WHEN c.b_exists THEN -1 ELSE 0 END)
) AS d (customer_id, status, n)
WHERE d.status IS NOT NULL AND d.status <> 'COMPLETED' AND d.customer_id IS NOT NULL
GROUP BY d.customer_id
HAVING sum(d.n) <> 0
""",
    f"reports/analytics.{NAME}.sql": """\
-- analytics.open_by_customer: a toy report, open orders per customer, unordered.
-- report: ORDER BY customer_id
-- kind: view
SELECT u.customer_id, u.open_orders
FROM (
    SELECT x.customer_id, sum(x.n)::bigint AS open_orders
    FROM (
        SELECT h.customer_id, h.n FROM analytics.open_by_customer_historic AS h
        UNION ALL
        SELECT c.customer_id, c.n FROM analytics.open_by_customer_current AS c
    ) AS x
    GROUP BY x.customer_id
    HAVING sum(x.n) > 0
) AS u
""",
}

#: its tables, as a migration would create them
DDL = f"""
CREATE TABLE analytics.{NAME}_delta (
    batch_id bigint NOT NULL, customer_id bigint NOT NULL, n bigint NOT NULL);
CREATE INDEX {NAME}_delta_batch_idx ON analytics.{NAME}_delta (batch_id);
CREATE TABLE analytics.{NAME}_historic (customer_id bigint PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE analytics.{NAME}_current (customer_id bigint PRIMARY KEY, n bigint NOT NULL);
"""

#: the toy from scratch on the source, in its own words (the oracle)
FROM_SCRATCH = """
SELECT customer_id, count(*) FROM operations.orders
WHERE status IS NOT NULL AND status <> 'COMPLETED' AND customer_id IS NOT NULL
GROUP BY 1 ORDER BY 1
"""

#: the source's changes between the steps: status moves, a new open order, a delete
CHANGES = """
UPDATE operations.orders SET status = 'COMPLETED', updated_at = CURRENT_TIMESTAMP(3)
WHERE order_id IN (SELECT order_id FROM operations.orders
                   WHERE status <> 'COMPLETED' AND customer_id IS NOT NULL
                   ORDER BY order_id LIMIT 3);
UPDATE operations.orders SET status = 'PROCESSING', updated_at = CURRENT_TIMESTAMP(3)
WHERE order_id IN (SELECT order_id FROM operations.orders WHERE status = 'COMPLETED'
                   AND customer_id IS NOT NULL ORDER BY order_id DESC LIMIT 2);
INSERT INTO operations.orders (order_date, delivery_date, customer_id, status)
SELECT current_date, current_date + 10, min(customer_id), 'PENDING' FROM operations.customers;
"""
DELETE = """
DELETE FROM operations.orders WHERE order_id = (
    SELECT max(order_id) FROM operations.orders WHERE status <> 'COMPLETED'
    AND customer_id IS NOT NULL)
"""


def views_with_toy(target: Path) -> Path:
    """A copy of ``views/`` with the toy's files added; returns it."""
    shutil.copytree(paths.views_dir(), target)
    for name, text in FILES.items():
        (target / name).write_text(text, encoding="utf-8")
    return target


def create_tables(url: str, views: Path) -> None:
    """The toy's tables and its view, in the warehouse at ``url`` (a migration's work)."""
    from acme_mv.reports.views import View

    view = View.from_file(views / "reports" / f"analytics.{NAME}.sql")
    with psycopg.connect(url) as conn:
        conn.execute(DDL)
        for statement in view.create():
            conn.execute(statement)


def _rows(conn: psycopg.Connection[Any], query: str) -> list[list[int]]:
    return [[int(v) for v in row] for row in conn.execute(query).fetchall()]


def run(views: Path, url: str, reader: str, reader_url: str) -> dict[str, Any]:
    """The pipeline on the toy (in a process whose ``views/`` is ``views``); what each step saw."""
    paths.views_dir = lambda: views  # before any module reads views/
    from acme_mv import grants
    from acme_mv.config import Settings
    from acme_mv.reports import export, registry, verify
    from acme_mv.reports.refresh import refresh
    from acme_mv.staging.compact import compact
    from acme_mv.sync import sync

    settings = Settings(database_url=url)
    out: dict[str, Any] = {
        "registry": [r.name for r in registry.reports()],
        "summaries": [s.name for s in registry.summaries()],
        "verified": list(verify.REPORTS),
        "steps": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="acme-toy-"))

    def step(name: str) -> None:
        csv = tmp / f"{name}.csv"
        export.export(settings, NAME, output=csv, force=True)
        lines = csv.read_text(encoding="utf-8").splitlines()
        with psycopg.connect(url) as conn:
            out["steps"][name] = {
                "export": [[int(v) for v in line.split(",")] for line in lines[1:]],
                "header": lines[0],
                "from_scratch": _rows(conn, FROM_SCRATCH),
                "verified_groups": verify.verify(settings).groups,
                "historic": _rows(conn, f"SELECT count(*) FROM analytics.{NAME}_historic")[0][0],
                "current": _rows(conn, f"SELECT count(*) FROM analytics.{NAME}_current")[0][0],
            }

    now = datetime.now(UTC)
    sync(settings)  # the first batch: the toy's first delta
    refresh(settings, now=now)
    step("first")
    with psycopg.connect(url) as conn:
        conn.execute(CHANGES)
    sync(settings)  # an incremental batch: the toy's delta
    refresh(settings, mode="current", now=now)
    step("changes")
    with psycopg.connect(url) as conn:
        conn.execute(DELETE)
    sync(settings, full=True)  # the delete as a tombstone
    refresh(settings, mode="current", now=now)
    step("delete")
    refresh(settings, now=now + timedelta(days=1))  # the day's rollover folds current in
    step("fold")
    out["granted"] = grants.grant_reader(url, reader)
    with psycopg.connect(reader_url) as conn:
        out["reader_rows"] = _rows(conn, f"SELECT count(*) FROM analytics.{NAME}")[0][0]
    with psycopg.connect(url) as conn:
        out["deltas_before"] = _rows(conn, f"SELECT count(*) FROM analytics.{NAME}_delta")[0][0]
    compacted = compact(settings, keep=timedelta(hours=1), now=now + timedelta(days=2))
    with psycopg.connect(url) as conn:
        out["deltas_after"] = _rows(
            conn,
            f"SELECT count(*) FROM analytics.{NAME}_delta WHERE batch_id <= "
            f"{compacted.history_batch_id}",
        )[0][0]
    out["history_batch_id"] = compacted.history_batch_id
    out["delta_rows_deleted"] = compacted.delta_rows_deleted
    step("compacted")
    shutil.rmtree(tmp)
    return out


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1]), *sys.argv[2:5])))
