"""``acme-mv serve``: the four reports on one live page, read-only, air-gap safe.

Stack: Starlette + uvicorn. Starlette is a small, well-kept ASGI toolkit that
has everything this page needs (routing with 405 for wrong methods, static
files from the package, plain responses) and nothing it does not: FastAPI
would add pydantic and an OpenAPI schema for an app with three GET routes.
uvicorn (without extras) is its usual server.

What the server does:

- ``GET /`` is the page (``static/index.html``); ``/static/*`` its JS and CSS,
  shipped inside the package: nothing is fetched from the internet, and the
  Content-Security-Policy says so (``default-src 'self'``).
- ``GET /api/data`` is every report (parsed from export's CSV), the headline
  totals (open orders, pending items, overdue orders: computed from those
  reports), the ties the top reports cut, the open-orders chart (a server-side
  SVG) and the freshness, as one JSON document with an ``ETag``; the page polls
  it and gets ``304`` until a new refresh lands or the day changes ("today" and
  "overdue" are in the server's ``--timezone``).
- ``GET /api/detail?report=<name>&key=<JSON object of the row's key columns>`` is the
  rows behind one report row (:mod:`acme_mv.reports.detail`): 400 for a bad request, 403
  when the connection's role may not read staging.
- ``GET /reports/<name>.csv`` is the report as ``acme-mv export`` writes it, byte
  for byte. Only the registry's report names exist: anything else is ``404``, any
  method other than GET/HEAD is ``405``.

Cache by refresh: one :class:`ReportCache` per server holds the reports of the
last refresh. At most once per ``check_every`` seconds (whatever the number of
viewers) it asks the warehouse for ``analytics.snapshot``'s (refreshed_at,
refreshed_batch_id), one-row query; only when that changed does it read the
reports again, in one REPEATABLE READ transaction. A hundred open pages cost the
warehouse the same as one.

Read-only: the one connection is opened with ``default_transaction_read_only=on``
(every transaction it runs, implicit ones included, refuses to write), with the
report-reader role when ``--reader-url`` / ``ACME_MV_READER_URL`` is set.
"""

from __future__ import annotations

import html
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import psycopg.conninfo
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from acme_mv.config import describe_target, scrub
from acme_mv.db import Conn, connect, first_line
from acme_mv.delivery.dashboard.chart import day_of, open_orders_svg
from acme_mv.delivery.reports import ReportSet, read_reports, refresh_key
from acme_mv.errors import (
    AcmeMvError,
    BadArgument,
    ConnectionFailed,
    ListenFailed,
    NeverRefreshed,
)
from acme_mv.reports import detail as detail_api
from acme_mv.reports.detail import Detail
from acme_mv.reports.export import REPORTS, default_name
from acme_mv.revision import require_head

log = logging.getLogger(__name__)

READER_URL_ENV = "ACME_MV_READER_URL"
STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: seconds between two looks at analytics.snapshot, per server (not per viewer):
#: a refresh shows within this plus the page's poll interval
CHECK_EVERY_S = 1.0
#: how often the page asks /api/data (it gets a 304 until a refresh lands)
POLL_EVERY_S = 2.0
#: the freshness turns red when the data is older than this
DEFAULT_STALE_AFTER_S = 60.0

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


@dataclass(frozen=True, kw_only=True)
class View:
    """What every viewer gets until the next refresh or the next day."""

    reports: ReportSet
    today: date
    body: bytes
    etag: str

    @classmethod
    def build(cls, reports: ReportSet, *, today: date) -> View:
        fresh = reports.freshness
        etag = f'"{fresh.refreshed_at.timestamp():.6f}-{fresh.refreshed_batch_id}-{today}"'
        tables: dict[str, dict[str, Any]] = {}
        for name in reports.csv:
            columns, rows = reports.table(name)
            tables[name] = {"columns": columns, "rows": rows}
        doc = {
            "version": etag.strip('"'),
            "refreshed_at": fresh.refreshed_at.isoformat(),
            "refreshed_batch_id": fresh.refreshed_batch_id,
            "as_of": fresh.as_of.isoformat(),
            "as_of_ms": int(fresh.as_of.timestamp() * 1000),
            "today": today.isoformat(),
            "totals": totals(tables, today=today),
            "ties": {
                name: {"value": tie.value, "tied": tie.tied, "shown": tie.shown}
                for name, tie in reports.ties.items()
            },
            "reports": tables,
            "chart": open_orders_svg(tables["open_orders"]["rows"], today=today)
            if "open_orders" in tables
            else "",
        }
        return cls(
            reports=reports,
            today=today,
            body=json.dumps(doc, separators=(",", ":")).encode(),
            etag=etag,
        )


def totals(tables: dict[str, dict[str, Any]], *, today: date) -> dict[str, int | None]:
    """The page's headline numbers, from the reports it shows (None: that report is absent):
    open orders, pending items, and overdue orders (open, delivery date before ``today``)."""

    def column_sum(name: str, column: str, *, before: date | None = None) -> int | None:
        if name not in tables:
            return None
        columns: list[str] = tables[name]["columns"]
        i = columns.index(column)
        d = columns.index("delivery_date") if before is not None else -1
        return sum(
            int(row[i] or 0)
            for row in tables[name]["rows"]
            if before is None or (row[d] and day_of(row[d]) < before)
        )

    return {
        "open_orders": column_sum("open_orders", "open_orders"),
        "pending_items": column_sum("pending_items", "pending_items"),
        "overdue_orders": column_sum("open_orders", "open_orders", before=today),
    }


class ReportCache:
    """One read-only warehouse connection and the last refresh's reports, shared by every viewer."""

    def __init__(
        self,
        url: str,
        *,
        check_every: float = CHECK_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        timezone: str = "UTC",
    ) -> None:
        self.url = url
        self.check_every = check_every
        #: "today" (the chart's marker, what is overdue) is the date in this timezone
        self.timezone = ZoneInfo(timezone)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: Conn | None = None
        self._view: View | None = None
        self._checked_at: float | None = None
        #: queries sent to the warehouse: cheap snapshot checks, and report loads
        self.checks = 0
        self.loads = 0

    def open(self) -> None:
        """Connect now and check the warehouse's migration (a bad URL or password, or a warehouse
        not migrated, fails here with one line, not at the first viewer)."""
        with self._lock:
            require_head(self._connection())

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def view(self) -> View:
        """The current reports; raises NeverRefreshed or ConnectionFailed."""
        with self._lock:
            now = self._clock()
            if self._checked_at is not None and now - self._checked_at < self.check_every:
                if self._view is None:
                    raise _never_refreshed()
                return self._today(self._view)
            try:
                conn = self._connection()
                key = refresh_key(conn)
                self.checks += 1
                if key is not None and (
                    self._view is None or self._view.reports.freshness.key != key
                ):
                    reports = read_reports(conn, ties=True)
                    self.loads += 1
                    self._view = (
                        View.build(reports, today=self.today()) if reports is not None else None
                    )
                self._checked_at = self._clock()
            except psycopg.Error as exc:
                raise self._failed("the reports", exc) from None
            if key is None or self._view is None:
                raise _never_refreshed()
            return self._today(self._view)

    def today(self) -> date:
        return datetime.now(self.timezone).date()

    def _today(self, view: View) -> View:
        """``view``, rebuilt (no query) when the day changed since it was built."""
        today = self.today()
        if view.today != today:
            self._view = view = View.build(view.reports, today=today)
        return view

    def detail(self, report: str, key: dict[str, str | None]) -> Detail:
        """The rows behind one report row (acme_mv.reports.detail) on the read-only connection;
        raises BadArgument, psycopg's InsufficientPrivilege (a reader role cannot read staging),
        NeverRefreshed or ConnectionFailed."""
        with self._lock:
            try:
                return detail_api.detail(self._connection(), report, key)
            except (psycopg.errors.InsufficientPrivilege, psycopg.DataError):
                raise
            except psycopg.Error as exc:
                raise self._failed("the detail", exc) from None

    def _failed(self, what: str, exc: psycopg.Error) -> ConnectionFailed:
        """Drop the connection (the next read opens a new one); the error to raise."""
        self._drop_connection()
        reason = scrub(first_line(exc), self.url)
        return ConnectionFailed(
            f"Cannot read {what} ({describe_target(self.url)}): {reason}", role="warehouse"
        )

    def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = connect(read_only_conninfo(self.url), role="warehouse", autocommit=True)
            conn.read_only = True
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._checked_at = None


DETAIL_NEEDS_WAREHOUSE = (
    "The detail reads staging, which this dashboard's role may not: serve with a --reader-url "
    "(ACME_MV_READER_URL) role that may read staging, or the warehouse role"
)


def _detail_key(text: str) -> dict[str, str | None]:
    """``key``: a JSON object of the row's key columns (null for NULL) -> the detail's key."""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not all(
        v is None or isinstance(v, str | int | float) for v in parsed.values()
    ):
        raise BadArgument(
            'key must be a JSON object of the row\'s key columns, e.g. {"customer_id":"7"}'
        )
    return {str(k): None if v is None else str(v) for k, v in parsed.items()}


def _never_refreshed() -> NeverRefreshed:
    return NeverRefreshed(
        "The analytics views have never been refreshed; waiting for `acme-mv refresh`"
    )


def read_only_conninfo(url: str) -> str:
    """``url`` with ``-c default_transaction_read_only=on`` added to its options."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    options = str(params.get("options") or "")
    options = f"{options} -c default_transaction_read_only=on".strip()
    return psycopg.conninfo.make_conninfo(url, options=options, application_name="acme-mv serve")


class _SecurityHeaders:
    """Adds the CSP and friends to every response (pages, data and static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(
    cache: ReportCache,
    *,
    stale_after: float = DEFAULT_STALE_AFTER_S,
    poll_every: float = POLL_EVERY_S,
    timezone: str = "UTC",
) -> Starlette:
    """The ASGI app over ``cache`` (kept in ``app.state.cache`` for tests and benchmarks)."""
    page = (
        (STATIC / "index.html")
        .read_text(encoding="utf-8")
        .replace("{{STALE_AFTER_S}}", f"{stale_after:g}")
        .replace("{{POLL_EVERY_S}}", f"{poll_every:g}")
        .replace("{{REPORTS}}", " ".join(REPORTS))
        .replace("{{DETAIL_KEYS}}", html.escape(json.dumps(detail_api.key_columns())))
    )

    def index(request: Request) -> Response:
        return Response(
            page, media_type="text/html; charset=utf-8", headers={"cache-control": "no-cache"}
        )

    def data(request: Request) -> Response:
        now_ms = str(int(time.time() * 1000))
        try:
            view = cache.view()
        except AcmeMvError as exc:
            return JSONResponse(
                {"error": str(exc)},
                status_code=503,
                headers={"x-server-time": now_ms, "cache-control": "no-store"},
            )
        headers = {"etag": view.etag, "x-server-time": now_ms, "cache-control": "no-cache"}
        if request.headers.get("if-none-match") == view.etag:
            return Response(status_code=304, headers=headers)
        return Response(view.body, media_type="application/json", headers=headers)

    def download(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in REPORTS:
            return JSONResponse(
                {"error": f"Unknown report {name!r}; the reports are: {', '.join(REPORTS)}"}, 404
            )
        try:
            view = cache.view()
        except AcmeMvError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        filename = default_name(
            name, fmt="csv", at=datetime.now(UTC).astimezone(ZoneInfo(timezone))
        )
        return Response(
            view.reports.csv_bytes(name),
            media_type="text/csv; charset=utf-8",
            headers={
                "content-disposition": f'attachment; filename="{filename}"',
                "cache-control": "no-store",
            },
        )

    def detail(request: Request) -> Response:
        headers = {"cache-control": "no-store"}
        report = request.query_params.get("report", "")
        try:
            key = _detail_key(request.query_params.get("key", "{}"))
            found = cache.detail(report, key)
        except BadArgument as exc:
            return JSONResponse({"error": str(exc)}, status_code=400, headers=headers)
        except psycopg.errors.InsufficientPrivilege:
            return JSONResponse({"error": DETAIL_NEEDS_WAREHOUSE}, status_code=403, headers=headers)
        except AcmeMvError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers=headers)
        text = [[None if v is None else str(v) for v in row] for row in found.rows]
        doc = {
            "report": found.report,
            "key": found.key,
            "columns": found.columns,
            "rows": text,
            "total": found.total,
            "count": found.count,
            "truncated": found.truncated,
        }
        return JSONResponse(doc, headers=headers)

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/api/data", data, methods=["GET"]),
            Route("/api/detail", detail, methods=["GET"]),
            Route("/reports/{name}.csv", download, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
    )
    app.state.cache = cache
    app.add_middleware(_SecurityHeaders)
    return app


def serve(
    url: str,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    stale_after: float = DEFAULT_STALE_AFTER_S,
    timezone: str = "UTC",
) -> None:
    """Serve the dashboard until Ctrl-C (uvicorn handles the signals)."""
    cache = ReportCache(url, timezone=timezone)
    cache.open()
    app = create_app(cache, stale_after=stale_after, timezone=timezone)
    sock = _listen(host, port)
    log.info("dashboard on http://%s:%d/ reading %s read-only", host, port, describe_target(url))
    server = _Server(
        uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
    )
    try:
        server.run(sockets=[sock])
    finally:
        cache.close()
        sock.close()
    log.info("dashboard stopped")


def _listen(host: str, port: int) -> socket.socket:
    """Bind here rather than in uvicorn, so a taken port is one line and exit 1."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ListenFailed(
            f"The dashboard cannot listen on {host}:{port}: {exc.strerror or exc}",
            host=host,
            port=port,
        ) from None
    return sock


class _Server(uvicorn.Server):
    """SIGINT/SIGTERM stop the server and ``serve`` returns (exit 0), as ``acme-mv run`` does;
    uvicorn's own handling re-raises the signal after the shutdown."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        saved = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)


@contextmanager
def running(app: ASGIApp, *, host: str = DEFAULT_HOST, port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a background thread; yields its
    base URL (for tests, benchmarks and the demo)."""
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="acme-mv serve", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise ListenFailed(
                f"The dashboard could not listen on {host}:{port}", host=host, port=port
            )
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join()
