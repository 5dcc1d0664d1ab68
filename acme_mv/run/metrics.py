"""Prometheus metrics of ``acme-mv run --metrics-port`` (prometheus-client).

Each run loop gets its own registry (no process-wide state), served over HTTP
by prometheus-client's own server thread. Names follow Prometheus's
conventions (``_seconds``, ``_total``, base units).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

#: seconds buckets for sync and refresh durations: 10 ms to 10 min
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """What the run loop reports; docs/reference.md lists them (generated from this registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._read_at: float | None = None
        self.up = Gauge(
            "acme_mv_up", "1 while the last cycle succeeded, 0 while cycles fail", registry=r
        )
        self.freshness = Gauge(
            "acme_mv_freshness_seconds",
            "Now minus the moment of the source the reports are up to (NaN before the first cycle)",
            registry=r,
        )
        self.freshness.set_function(self._freshness)
        self.rows_synced = Counter(
            "acme_mv_rows_synced_total", "Rows that landed in staging", registry=r
        )
        self.cycles = Counter(
            "acme_mv_cycles_total", "Cycles (sync + refresh) that succeeded", registry=r
        )
        self.failed_cycles = Counter(
            "acme_mv_failed_cycles_total",
            "Cycles that failed, by the server that failed (warehouse, source or unknown)",
            ["server"],
            registry=r,
        )
        for server in ("warehouse", "source", "unknown"):
            self.failed_cycles.labels(server=server)
        self.sync_seconds = Histogram(
            "acme_mv_sync_seconds", "Seconds per sync", buckets=DURATION_BUCKETS, registry=r
        )
        self.refresh_seconds = Histogram(
            "acme_mv_refresh_seconds", "Seconds per refresh", buckets=DURATION_BUCKETS, registry=r
        )
        self.last_success = Gauge(
            "acme_mv_last_success_timestamp_seconds",
            "Unix time of the last successful cycle",
            registry=r,
        )

        self.slot_retained = Gauge(
            "acme_mv_cdc_slot_retained_bytes",
            "Source WAL the replication slot keeps (run --cdc; NaN until first read)",
            registry=r,
        )
        self.slot_lag = Gauge(
            "acme_mv_cdc_slot_lag_bytes",
            "Source WAL written since the slot's confirmed position (run --cdc; NaN until read)",
            registry=r,
        )
        self.slot_retained.set(math.nan)
        self.slot_lag.set(math.nan)

    def slot_observed(self, *, retained_bytes: int | None, lag_bytes: int | None) -> None:
        self.slot_retained.set(math.nan if retained_bytes is None else retained_bytes)
        self.slot_lag.set(math.nan if lag_bytes is None else lag_bytes)

    def _freshness(self) -> float:
        if self._read_at is None:
            return math.nan
        return max(0.0, time.time() - self._read_at)

    def cycle_succeeded(
        self, *, rows: int, sync_s: float, refresh_s: float, read_at: float | None
    ) -> None:
        self.up.set(1)
        self.cycles.inc()
        self.rows_synced.inc(rows)
        self.sync_seconds.observe(sync_s)
        self.refresh_seconds.observe(refresh_s)
        self.last_success.set(time.time())
        if read_at is not None:
            self._read_at = read_at

    def caught_up(self, at: float) -> None:
        """The reports' moment of the source, read after a change-capture heartbeat (Unix
        time); never moves back."""
        self._read_at = at if self._read_at is None else max(self._read_at, at)

    def cycle_failed(self, server: str) -> None:
        self.up.set(0)
        self.failed_cycles.labels(
            server=server if server in ("warehouse", "source") else "unknown"
        ).inc()


@contextmanager
def serve(metrics: Metrics, *, port: int, host: str = "127.0.0.1") -> Iterator[int]:
    """Serve ``metrics`` on http://host:port/metrics until the block ends; yields the port."""
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
