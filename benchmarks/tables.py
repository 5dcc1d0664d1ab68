"""The refresh-performance tables of docs/refresh-performance.md, generated from result files.

    python -m benchmarks.tables benchmarks/results/perf9-200k.json benchmarks/results/perf9-1m.json

Prints Markdown: one table of the issue's speed targets per run (with the load average at its
start and end, since the machine is shared), then the per-cycle figures and the profile.
Nothing here is typed by hand: the docs paste this output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _load(values: list[float] | None) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "n/a"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def _by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in doc["measurements"]}


def targets(doc: dict[str, Any]) -> list[str]:
    """The issue's speed targets, one row each, for one run."""
    found = _by_name(doc)
    rows: list[str] = []
    growth = found.get("refresh_growth")
    if growth and growth["status"] == "ok":
        extra = growth["extra"]
        worst = max(extra["each_vs_rebuild"])
        ratio = extra["last_over_first"]
        rebuild = ", ".join(f"{s:.2f}" for s in extra["rebuild_s"])
        rows.append(
            f"| refresh_growth: last/first refresh | <= 1.2 | {ratio:.2f} | {_mark(ratio <= 1.2)} |"
        )
        rows.append(
            "| refresh_growth: worst cycle / the rebuild after the cycles "
            f"(rebuilds before, after: {rebuild} s) | <= 5% | "
            f"{worst:.1%} | {_mark(worst <= 0.05)} |"
        )
        strict = max(extra["refresh_s"]) / min(extra["rebuild_s"])
        rows.append(
            f"| refresh_growth: worst cycle / the faster of those rebuilds | <= 5% | "
            f"{strict:.1%} | {_mark(strict <= 0.05)} |"
        )
    fold = found.get("rollover.fold")
    if fold and fold["status"] == "ok" and fold["ratio"] is not None:
        rows.append(
            f"| fold after the 8 cycles / rebuild | <= 10% | {fold['ratio']:.1%} | "
            f"{_mark(fold['ratio'] <= 0.1)} |"
        )
    one = found.get("one_percent.refresh")
    if one and one["status"] == "ok":
        extra = one["extra"]
        rows.append(
            f"| 1% of the orders changed: worst refresh / fastest rebuild | <= 2% | "
            f"{extra['worst_vs_rebuild']:.1%} | {_mark(extra['worst_vs_rebuild'] <= 0.02)} |"
        )
        rows.append(
            f"| 1% changed: worst refresh / the old all-versions recomputation | (<= 2%) | "
            f"{extra['worst_vs_all_versions']:.1%} | "
            f"{_mark(extra['worst_vs_all_versions'] <= 0.02)} |"
        )
    fold10 = found.get("rollover10.fold")
    if fold10 and fold10["status"] == "ok":
        ratio = fold10["extra"]["fold_vs_rebuild"]
        rows.append(
            f"| rollover after a day with 10% of the orders changed: fold / rebuild | <= 10% | "
            f"{ratio:.1%} | {_mark(ratio <= 0.1)} |"
        )
    return rows


def figures(doc: dict[str, Any]) -> list[str]:
    """Seconds behind the ratios."""
    found = _by_name(doc)
    rows: list[str] = []

    def add(what: str, seconds: list[float]) -> None:
        rows.append(f"| {what} | {', '.join(_ms(s) for s in seconds)} |")

    growth = found.get("refresh_growth")
    if growth and growth["status"] == "ok":
        add("refresh_growth: refresh --current per cycle", growth["extra"]["refresh_s"])
        add("refresh_growth: sync per cycle", growth["extra"]["sync_s"])
        add(
            "refresh_growth: refresh --rebuild before, after the cycles",
            growth["extra"]["rebuild_s"],
        )
        rows.append(
            "| refresh_growth: delta rows per refresh | "
            + ", ".join(map(str, growth["extra"]["delta_rows_per_refresh"]))
            + " (rows) |"
        )
    for name, what in (
        ("rollover.fold", "fold after the 8 cycles"),
        ("one_percent.refresh", "1%: refresh --current per round"),
        ("one_percent.sync", "1%: sync per round"),
        ("one_percent.rebuild", "1%: refresh --rebuild before, after the rounds"),
        ("one_percent.all_versions", "1%: the old all-versions recomputation"),
        ("rollover10.fold", "10% day: fold"),
        ("rollover10.rebuild", "10% day: refresh --rebuild"),
    ):
        m = found.get(name)
        if m and m["status"] == "ok":
            add(what, m["seconds"])
    return rows


def profile(doc: dict[str, Any]) -> list[str]:
    """The profile's cycles: the refresh's fixed costs and the sync's statements by time."""
    m = _by_name(doc).get("profile")
    if not m or m["status"] != "ok":
        return []
    fixed = m["extra"]["fixed"]
    out = [
        f"Fixed costs (median of 5): connect {_ms(fixed['connect_s'])} ms, require_head "
        f"{fixed['require_head_s'] * 1000:.1f} ms, "
        f"one round trip {fixed['round_trip_s'] * 1000:.2f} ms.",
        "",
        "| cycle | refresh ms | refresh with no new batch ms | delta rows | INSERT ... ON CONFLICT "
        "server ms (open_orders / pending_items / pending_orders) | sync s |",
        "|--:|--:|--:|--:|---|--:|",
    ]
    for i, c in enumerate(m["extra"]["cycles"], 1):
        server = " / ".join(f"{e['execution_s'] * 1000:.0f}" for e in c["explain"])
        out.append(
            f"| {i} | {_ms(c['refresh_s'])} | {_ms(c['idle_refresh_s'])} "
            f"| {c['refresh_delta_rows']} "
            f"| {server} | {c['sync_s']:.2f} |"
        )
    last = m["extra"]["cycles"][-1]
    out += [
        "",
        f"The sync of the last profiled cycle ({last['sync_s']:.2f} s), its statements by time:",
        "",
        "| ms | statement |",
        "|--:|---|",
    ]
    for s in sorted(last["sync"], key=lambda s: -s["seconds"])[:16]:
        text = s["statement"].replace("|", "\\|")[:100]
        out.append(f"| {s['seconds'] * 1000:.0f} | `{text}` |")
    scans = last["source_scans"]
    out += [
        "",
        "Source side alone (EXPLAIN ANALYZE of the incremental reads): "
        + ", ".join(
            f"{t} {scans[f'{t}_scan_s'] * 1000:.0f} ms ({scans[f'{t}_scan_rows']:.0f} rows)"
            for t in ("orders", "order_items", "customers", "products")
        )
        + ".",
    ]
    return out


def render(paths: list[Path]) -> str:
    out: list[str] = []
    for path in paths:
        doc = json.loads(path.read_text())
        machine = doc["machine"]
        out += [
            f"### {doc['orders']:,} orders (`{path.name}`, {doc['generated_at']}, PostgreSQL "
            f"{doc['versions'].get('postgresql')}, {machine['cpus']} CPUs; load average 1/5/15 min "
            f"at start {_load(machine.get('load_average_at_start'))}, at end "
            f"{_load(machine.get('load_average_1_5_15'))})",
            "",
            "| target | goal | measured | met |",
            "|---|---|--:|---|",
            *targets(doc),
            "",
            "| figure | ms |",
            "|---|---|",
            *figures(doc),
            "",
        ]
        prof = profile(doc)
        if prof:
            out += [*prof, ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        sys.stderr.write("usage: python -m benchmarks.tables RESULT.json...\n")
        return 2
    sys.stdout.write(render([Path(a) for a in args]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
