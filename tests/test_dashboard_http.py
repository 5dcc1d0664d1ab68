"""The dashboard over real HTTP (uvicorn in a thread, urllib): the data and CSV endpoints equal the
exports, bad input is 404/405, the connection is read-only, a reader role works, and the cache
costs the warehouse one load per refresh whatever the number of viewers."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from acme_mv.delivery.dashboard.app import ReportCache, create_app, running, totals
from acme_mv.delivery.dashboard.chart import open_orders_svg
from tests.support.cli_runner import run
from tests.support.delivery_data import EXPECTED, sync_and_refresh


@dataclass
class Dashboard:
    url: str
    cache: ReportCache


class FakeClock:
    """The cache's clock, moved by the test (no sleeping, no timing)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def dashboard(refreshed: str, clock: FakeClock) -> Iterator[Dashboard]:
    cache = ReportCache(refreshed, check_every=5.0, clock=clock)
    with running(create_app(cache)) as url:
        yield Dashboard(url, cache)
    cache.close()


def get(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, {k.lower(): v for k, v in res.headers.items()}, res.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def test_the_page_and_its_assets_are_local(dashboard: Dashboard) -> None:
    status, headers, body = get(dashboard.url + "/")
    assert status == 200
    page = body.decode()
    for name in EXPECTED:
        assert f'id="report-{name}"' in page and f'href="/reports/{name}.csv"' in page
    assert "default-src 'self'" in headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and all(a.startswith("/") for a in assets), assets  # nothing from another host
    for asset in ("/static/app.js", "/static/app.css"):
        status, _, text = get(dashboard.url + asset)
        assert status == 200
        assert not re.search(rb"https?://", text), f"{asset} names a remote URL"


def test_data_equals_the_exports_and_answers_304_until_a_refresh(dashboard: Dashboard) -> None:
    status, headers, body = get(dashboard.url + "/api/data")
    assert status == 200
    doc = json.loads(body)
    for name, text in EXPECTED.items():
        header, *rows = _rows(text)
        assert doc["reports"][name] == {"columns": header, "rows": rows}
    today = date.fromisoformat(doc["today"])
    assert doc["chart"] == open_orders_svg(_rows(EXPECTED["open_orders"])[1:], today=today)
    assert doc["totals"] == totals(doc["reports"], today=today)
    assert (doc["totals"]["open_orders"], doc["totals"]["pending_items"]) == (5, 23)
    # top_customers has 2 rows (no cut); top_dates shows 12-12 and 12-13, not NULL, all at 1
    assert doc["ties"] == {"top_dates": {"value": "1", "tied": 3, "shown": 2}}
    assert doc["refreshed_batch_id"] == 1
    assert headers["etag"] and int(headers["x-server-time"]) > doc["as_of_ms"] > 0
    status, _, body = get(dashboard.url + "/api/data", headers={"If-None-Match": headers["etag"]})
    assert (status, body) == (304, b"")


@pytest.mark.parametrize("report", list(EXPECTED))
def test_csv_download_equals_the_export(dashboard: Dashboard, report: str, tmp_path: Path) -> None:
    res = run("export", report, "--output-dir", str(tmp_path))
    assert res.exit_code == 0, res.stderr
    exported = Path(res.stdout.strip()).read_bytes()
    status, headers, body = get(f"{dashboard.url}/reports/{report}.csv")
    assert status == 200
    assert body == exported == EXPECTED[report].encode()
    assert headers["content-type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(
        rf'attachment; filename="{report}_result_\d{{8}}_\d{{6}}\.csv"',
        headers["content-disposition"],
    )


@pytest.mark.parametrize(
    "path",
    [
        "/reports/sync_batches.csv",
        "/reports/staging.orders.csv",
        "/reports/snapshot.csv",
        "/reports/open_orders.json",
        "/reports/..%2fstaging.csv",
        "/api/staging",
        "/static/../app.py",
        "/admin",
    ],
)
def test_unknown_paths_are_404(dashboard: Dashboard, path: str) -> None:
    status, _, body = get(dashboard.url + path)
    assert status == 404
    assert body in (b"Not Found", b"") or set(json.loads(body)) == {
        "error"
    }  # a message, never rows


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/", "/api/data", "/reports/open_orders.csv", "/static/app.js"])
def test_only_get_is_allowed(dashboard: Dashboard, method: str, path: str) -> None:
    status, headers, _ = get(dashboard.url + path, method=method)
    assert status == 405
    assert "GET" in headers.get("allow", "GET")


def test_head_is_allowed(dashboard: Dashboard) -> None:
    assert get(dashboard.url + "/api/data", method="HEAD")[0] == 200


def test_the_connection_is_read_only(dashboard: Dashboard) -> None:
    get(dashboard.url + "/api/data")
    conn = dashboard.cache._connection()  # the one the server reads with
    assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("CREATE TABLE analytics.written_by_the_dashboard (x int)")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), conn.transaction():
        conn.execute("UPDATE analytics.snapshot SET refreshed_at = now()")


@contextmanager
def analytics_reader(refreshed: str) -> Iterator[str]:
    """A role granted SELECT on analytics only (what grant-reader gives), dropped afterwards."""
    role = f"acme_reader_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(refreshed, autocommit=True)
    try:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        admin.execute(sql.SQL("GRANT USAGE ON SCHEMA analytics TO {}").format(sql.Identifier(role)))
        admin.execute(
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO {}").format(
                sql.Identifier(role)
            )
        )
        yield role
    finally:
        admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        admin.close()


def test_a_reader_role_without_staging(refreshed: str, server_url: str) -> None:
    """A role granted SELECT on analytics only (what grant-reader gives) serves every report."""
    with analytics_reader(refreshed) as role:
        cache = ReportCache(make_conninfo(refreshed, user=role))
        with running(create_app(cache)) as url:
            status, _, body = get(url + "/api/data")
            assert status == 200, body
            doc = json.loads(body)
            assert doc["reports"]["pending_items"]["rows"] == _rows(EXPECTED["pending_items"])[1:]
            assert doc["as_of"] == doc["refreshed_at"]  # no sync_batches: the refresh's time
            status, _, csv_body = get(url + "/reports/top_customers.csv")
            assert (status, csv_body) == (200, EXPECTED["top_customers"].encode())
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                cache._connection().execute("SELECT 1 FROM staging.orders")
        cache.close()


def test_never_refreshed_is_a_503_with_one_line(db_url: str) -> None:
    cache = ReportCache(db_url)
    with running(create_app(cache)) as url:
        status, _, body = get(url + "/api/data")
        assert status == 503
        assert json.loads(body) == {
            "error": "The analytics views have never been refreshed; waiting for `acme-mv refresh`"
        }
    cache.close()


def test_a_hundred_viewers_cost_one_check_and_one_load_per_refresh(
    dashboard: Dashboard, refreshed: str, clock: FakeClock
) -> None:
    def viewers(n: int) -> list[bytes]:
        bodies: list[bytes] = []
        lock = threading.Lock()

        def view() -> None:
            status, _, body = get(dashboard.url + "/api/data")
            assert status == 200
            with lock:
                bodies.append(body)

        threads = [threading.Thread(target=view) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(bodies) == n
        return bodies

    first = viewers(100)
    assert (dashboard.cache.checks, dashboard.cache.loads) == (1, 1)
    clock.now += 10  # past check_every: one more cheap check, nothing new to load
    viewers(100)
    assert (dashboard.cache.checks, dashboard.cache.loads) == (2, 1)
    with psycopg.connect(refreshed, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
            "('2026-12-14', 1, 'PENDING')"
        )
    sync_and_refresh(refreshed)
    viewers(50)  # the refresh landed, but the check interval has not passed: still the old reports
    assert (dashboard.cache.checks, dashboard.cache.loads) == (2, 1)
    clock.now += 10
    after = viewers(100)
    assert (dashboard.cache.checks, dashboard.cache.loads) == (3, 2)
    assert len(set(first)) == 1 and len(set(after)) == 1 and first[0] != after[0]
    assert ["2026-12-14", "PENDING", "1"] in json.loads(after[0])["reports"]["open_orders"]["rows"]


def test_a_top_report_cut_inside_a_tie_says_how_many_tie(refreshed: str) -> None:
    """Customers 1..4 have one PENDING order each: top_customers shows 3 of the 4 tied; top_dates
    shows 2 of the 3 dates (NULL included) tied at one open order."""
    with psycopg.connect(refreshed, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
            "('2026-12-11', 3, 'PENDING'), ('2026-12-11', 4, 'PENDING')"
        )
    sync_and_refresh(refreshed)
    cache = ReportCache(refreshed)
    try:
        view = cache.view()
    finally:
        cache.close()
    doc = json.loads(view.body)
    assert doc["reports"]["top_customers"]["rows"] == [
        ["1", "Ann", "1"],
        ["2", "Bob, Jr.", "1"],
        ["3", "Cy", "1"],
    ]
    assert doc["reports"]["top_dates"]["rows"] == [
        ["2026-12-11", "4"],
        ["2026-12-12", "1"],
        ["2026-12-13", "1"],
    ]
    assert doc["ties"] == {
        "top_customers": {"value": "1", "tied": 4, "shown": 3},
        "top_dates": {"value": "1", "tied": 3, "shown": 2},
    }


def _detail(url: str, report: str, key: object) -> tuple[int, dict[str, Any]]:
    query = urllib.parse.urlencode({"report": report, "key": json.dumps(key)})
    status, _, body = get(f"{url}/api/detail?{query}")
    return status, json.loads(body)


def test_detail_of_every_row_adds_up_to_its_number(dashboard: Dashboard) -> None:
    from acme_mv.reports.detail import shape

    for report, text in EXPECTED.items():
        header, *rows = _rows(text)
        for row in rows:
            key = {c: row[header.index(c)] or None for c in shape(report).keys}
            status, doc = _detail(dashboard.url, report, key)
            assert status == 200, doc
            assert (doc["report"], doc["key"], doc["truncated"]) == (report, key, False)
            assert doc["total"] == int(row[-1]), (report, key, doc)
            assert all(isinstance(v, str | None) for r in doc["rows"] for v in r)
    status, doc = _detail(
        dashboard.url, "open_orders", {"delivery_date": None, "status": "PENDING"}
    )
    assert doc["columns"][:2] == ["order_id", "delivery_date"] and doc["rows"][0][1] is None


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("report=nope&key={}", "Unknown report 'nope'"),
        ("report=top_dates&key=%7B%22status%22%3Anull%7D", "no key column 'status'"),
        ("report=top_dates&key=%7B%22delivery_date%22%3A%22soon%22%7D", "is not a date"),
        ("report=top_dates&key=[1]", "key must be a JSON object"),
        ("report=top_dates&key=%7B", "key must be a JSON object"),
    ],
)
def test_a_bad_detail_request_is_a_400_with_one_line(
    dashboard: Dashboard, query: str, needle: str
) -> None:
    status, _, body = get(f"{dashboard.url}/api/detail?{query}")
    assert status == 400, body
    error = json.loads(body)["error"]
    assert needle in error and "\n" not in error


def test_the_detail_needs_a_role_that_reads_staging(refreshed: str) -> None:
    with analytics_reader(refreshed) as role:
        cache = ReportCache(make_conninfo(refreshed, user=role))
        with running(create_app(cache)) as url:
            status, doc = _detail(url, "top_customers", {"customer_id": "1"})
            assert status == 403, doc
            assert "may not" in doc["error"] and "\n" not in doc["error"]
            assert get(url + "/api/data")[0] == 200  # the connection still serves the reports
        cache.close()
