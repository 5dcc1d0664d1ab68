"""(9) Dashboard: the page's data endpoint (GET /api/data) over real HTTP, three ways.

- ``dashboard.cached``: what almost every poll costs: the reports of the last
  refresh from the server's cache (no warehouse query);
- ``dashboard.checked``: a poll that also runs the once-per-interval snapshot
  check (one one-row query);
- ``dashboard.after_refresh``: the first poll after a refresh: the check, the
  four reports read in one transaction, the JSON and the chart built (once per
  refresh for all viewers).
"""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

from acme_mv.delivery.dashboard.app import ReportCache, create_app, running
from acme_mv.reports import refresh as refresh_api
from benchmarks.acme_sync import reports_ready
from benchmarks.core import Bench, Result, guarded, rounds

NAME = "dashboard"
#: requests are fast; more rounds give a steadier median at no real cost
MIN_ROUNDS = 20


def measure(bench: Bench) -> list[Result]:
    with guarded(bench, "dashboard", "acme-mv serve: GET /api/data") as found:
        reports_ready(bench)
        count = max(bench.rounds, MIN_ROUNDS)
        for name, title, check_every, before in (
            ("dashboard.cached", "GET /api/data, served from the cache", 3600.0, None),
            ("dashboard.checked", "GET /api/data with the snapshot check", 0.0, None),
            (
                "dashboard.after_refresh",
                "GET /api/data right after a refresh (reads the 4 reports)",
                0.0,
                lambda: refresh_api.refresh(bench.settings, mode="current"),
            ),
        ):
            cache = ReportCache(bench.warehouse_url, check_every=check_every)
            with running(create_app(cache)) as url:
                parts = urlsplit(url)
                conn = http.client.HTTPConnection(
                    parts.hostname or "127.0.0.1", parts.port, timeout=60
                )
                size: list[int] = []

                def get(conn: http.client.HTTPConnection = conn, size: list[int] = size) -> None:
                    conn.request("GET", "/api/data")
                    res = conn.getresponse()
                    body = res.read()
                    if res.status != 200:
                        raise RuntimeError(f"/api/data answered {res.status}: {body[:200]!r}")
                    size.append(len(body))

                get()  # the first load, untimed
                result = Result(name, title)
                rounds(bench, result, get, before=before, count=count)
                conn.close()
            reports = cache.view().reports
            result.rows = sum(len(reports.table(n)[1]) for n in reports.csv)  # report rows served
            result.throughput = False
            result.note = f"{size[-1]:,} bytes of JSON; {cache.loads} loads, {cache.checks} checks"
            cache.close()
            found.append(result)
    return found
