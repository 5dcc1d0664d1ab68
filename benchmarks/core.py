"""What every measurement shares: the run's context, timing rounds, results."""

from __future__ import annotations

import importlib
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from acme_mv.config import Settings, scrub
from acme_mv.db import first_line

log = logging.getLogger("benchmarks")

Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass
class Result:
    """One line of the report: a measurement over rounds, or why it has none."""

    name: str
    title: str
    seconds: list[float] = field(default_factory=list)
    rows: int | None = None
    status: str = "ok"
    note: str = ""
    #: filled in by :func:`benchmarks.report.compute_ratios`
    ratio: float | None = None
    ratio_to: str = ""
    target: str = ""
    met: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: False when ``seconds`` are not the time to process ``rows`` (e.g. freshness delays)
    throughput: bool = True

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def min(self) -> float | None:
        return min(self.seconds) if self.seconds else None

    @property
    def max(self) -> float | None:
        return max(self.seconds) if self.seconds else None

    @property
    def rows_per_s(self) -> float | None:
        med = self.median
        return self.rows / med if self.throughput and self.rows is not None and med else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "rounds": len(self.seconds),
            "seconds": self.seconds,
            "median_s": self.median,
            "min_s": self.min,
            "max_s": self.max,
            "rows": self.rows,
            "rows_per_s": self.rows_per_s,
            "ratio": self.ratio,
            "ratio_to": self.ratio_to,
            "target": self.target,
            "target_met": self.met,
            "note": self.note,
            **({"extra": self.extra} if self.extra else {}),
        }


def _load_average() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


@dataclass
class Bench:
    """The run: where the source and the warehouse are, the size, the rounds."""

    source_url: str
    warehouse_url: str
    orders: int
    rounds: int
    #: the admin URL of the server (to create databases, e.g. for ``scale``)
    server_url: str = ""
    workdir: Path = field(default_factory=lambda: Path("benchmarks/results"))
    #: rows per source table, set by :func:`benchmarks.source.prepare`
    counts: dict[str, int] = field(default_factory=dict)
    #: how many 1% change rounds were applied to the source (each hits new orders)
    changes: int = 0
    results: dict[str, Result] = field(default_factory=dict)
    #: os.getloadavg() when the run started (other work on the machine skews the figures)
    load_at_start: list[float] | None = field(default_factory=_load_average)

    @property
    def settings(self) -> Settings:
        return Settings(database_url=self.warehouse_url, source_url=self.source_url)

    def connect(self, which: str, *, autocommit: bool = True) -> Conn:
        url = self.source_url if which == "source" else self.warehouse_url
        return psycopg.connect(
            url, autocommit=autocommit, application_name=f"acme-mv bench {which}"
        )

    def scrub(self, text: str) -> str:
        return scrub(text, self.source_url, self.warehouse_url, self.server_url)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rounds(
    bench: Bench,
    result: Result,
    run: Callable[[], object],
    *,
    before: Callable[[], object] | None = None,
    count: int | None = None,
) -> Result:
    """Time ``run`` ``count`` (default ``bench.rounds``) times; ``before`` is untimed setup."""
    for i in range(count or bench.rounds):
        if before is not None:
            before()
        result.seconds.append(timed(run))
        log.info("%s round %d: %.3f s", result.name, i + 1, result.seconds[-1])
    return result


def require(module: str, *names: str) -> Any:
    """Import ``module`` and check it has ``names``; raise NotAvailable otherwise."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise NotAvailable(
            f"{module} is not installed: pip install 'acme-mv[bench]' ({first_line(exc)})"
        ) from None
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        raise NotAvailable(f"{module} has no {', '.join(missing)} yet")
    return mod


class NotAvailable(Exception):
    """A measurement cannot run here (optional package missing, disk)."""


@contextmanager
def guarded(bench: Bench, name: str, title: str) -> Iterator[list[Result]]:
    """Collect a measurement's results; a failure becomes a status line, not a crash."""
    found: list[Result] = []
    try:
        yield found
    except NotAvailable as exc:
        found[:] = [Result(name, title, status="not available", note=bench.scrub(str(exc)))]
    except Exception as exc:  # one broken measurement must not lose the others' figures
        log.exception("%s failed", name)
        msg = bench.scrub(f"{type(exc).__name__}: {first_line(exc)}")
        found.append(Result(name, title, status="error", note=msg))
    for result in found:
        bench.results[result.name] = result
