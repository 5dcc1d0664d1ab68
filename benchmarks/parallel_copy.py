"""(2b) The first copy against the raw pipe, side by side in the same rounds.

Each round runs, one after the other on the same server and source: the raw
binary ``psql | psql`` pipe of orders and order_items into index-free tables
(:func:`benchmarks.raw_copy.pipe`), the same pipe into tables with the
source's primary keys (``parallel.raw_pk``), then ``sync(full=True, jobs=N)``
for each N of :data:`JOBS` (default 1, the serial path, i.e. ``sync --full`` on an
empty warehouse, and 2, the parallel first copy), each into an empty warehouse
(version tables, latest-state tables and deltas emptied, untimed, before it).
Alternating inside a round means a busy neighbour slows all variants alike;
the figure that counts is the median over rounds of each round's ratio
(``extra.round_ratios`` to the index-free pipe, ``extra.round_ratios_pk`` to
the pipe with keys). Each round also records the load average
(``extra.load``), the bytes written per live source row (``extra.bytes_per_row``:
``pg_total_relation_size`` of what the variant wrote, i.e. staging's tables for a
sync, over the rows of the four source tables; ``extra.to_source``: the same bytes over the
source's own tables, indexes included) and, per sync, its phases as
the sync logs them at DEBUG (``extra.phases``: COPY, index builds, ANALYZE,
attach, state, apply).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg import sql

from acme_mv import sync as sync_api
from benchmarks import cpu, pg, raw_copy
from benchmarks.acme_sync import empty_staging, migrated
from benchmarks.core import Bench, Result, guarded, timed

NAME = "parallel_copy"
#: the raw pipe's tables with the source's primary keys
SCRATCH_PK = "bench_raw_pk"
#: the variants, by sessions (1: the serial path); ACME_MV_BENCH_JOBS=2 leaves the serial
#: path out (a 100M-row round is long enough with the raw pipe and one variant)
JOBS = tuple(int(j) for j in os.environ.get("ACME_MV_BENCH_JOBS", "1,2").split(","))


class _Phases(logging.Handler):
    """The DEBUG lines of acme_mv.sync.* and acme_mv.staging.* during one sync (where its time
    went)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.created:.2f} {record.name} {record.getMessage()}")


def _sync(bench: Bench, jobs: int, phases: list[list[str]]) -> None:
    handler = _Phases()
    loggers = [logging.getLogger(name) for name in ("acme_mv.sync", "acme_mv.staging")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        sync_api.sync(bench.settings, jobs=jobs, full=True)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
    phases.append(handler.lines)


def _empty_scratch(bench: Bench) -> None:
    with bench.connect("warehouse") as wh:
        for schema in (raw_copy.SCRATCH, SCRATCH_PK):
            for table in raw_copy.TABLES:
                wh.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(schema, table)))
        wh.execute("CHECKPOINT")


def _raw(bench: Bench, schema: str) -> None:
    for table in raw_copy.TABLES:
        raw_copy.pipe(bench, table, "binary", schema=schema)


def _scratch_tables(bench: Bench) -> None:
    """The raw pipes' tables: index-free, and the same with the source's primary keys."""
    with bench.connect("source") as src, bench.connect("warehouse") as wh:
        for table in raw_copy.TABLES:
            shape = pg.columns(src, "operations", table)
            pg.create_like(wh, raw_copy.SCRATCH, table, shape)
            pg.create_like(wh, SCRATCH_PK, table, shape)
            wh.execute(
                sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                    sql.Identifier(SCRATCH_PK, table), sql.Identifier(shape[0][0])
                )
            )


#: staging's tables (a partitioned table's size is its partitions'): what a sync writes
_STAGING_BYTES = """
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
WHERE c.relnamespace = 'staging'::regnamespace AND c.relkind = 'r'
"""
_SCHEMA_BYTES = """
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
WHERE c.relnamespace = %s::regnamespace AND c.relkind = 'r'
"""


def _bytes_per_row(bench: Bench, result: Result, schema: str) -> None:
    """Append the bytes ``schema``'s tables take per live source row (all four tables'), and
    their ratio to what the source's own tables take (``extra.to_source``)."""
    with bench.connect("warehouse") as wh:
        if schema == "staging":
            row = wh.execute(_STAGING_BYTES).fetchone()
        else:
            row = wh.execute(_SCHEMA_BYTES, (schema,)).fetchone()
    with bench.connect("source") as src:
        source = src.execute(_SCHEMA_BYTES, ("operations",)).fetchone()
    written = int(row[0]) if row else 0
    live = sum(bench.counts.values()) or 1
    result.extra.setdefault("bytes_per_row", []).append(round(written / live, 1))
    result.extra["source_bytes_per_row"] = round(int(source[0]) / live, 1) if source else 0
    if source and int(source[0]):
        result.extra.setdefault("to_source", []).append(round(written / int(source[0]), 2))


def variant_name(jobs: int) -> str:
    return "parallel.serial" if jobs == 1 else f"parallel.jobs{jobs}"


def _cpu_timed(result: Result, fn: Callable[[], None]) -> None:
    """Run ``fn``; append its seconds, and its CPU seconds (``extra.cpu``: the whole box, and
    the Python side: this process and its children, i.e. the sync's workers or psql)."""
    own0, box0 = cpu.process_tree_and_box()
    result.seconds.append(timed(fn))
    own1, box1 = cpu.process_tree_and_box()
    result.extra.setdefault("cpu", []).append(
        {"box_s": round(box1 - box0, 2), "clients_s": round(own1 - own0, 2)}
    )


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _ratios(variants: list[tuple[int, Result]], raw: Result, raw_pk: Result) -> None:
    for n, result in variants:
        result.extra["jobs"] = n
        ratios = [s / r for s, r in zip(result.seconds, raw.seconds, strict=True)]
        result.extra["round_ratios"] = [round(x, 3) for x in ratios]
        result.extra["median_round_ratio"] = round(statistics.median(ratios), 3)
        to_pk = [s / r for s, r in zip(result.seconds, raw_pk.seconds, strict=True)]
        result.extra["round_ratios_pk"] = [round(x, 3) for x in to_pk]
        result.extra["median_round_ratio_pk"] = round(statistics.median(to_pk), 3)
        result.ratio = result.extra["median_round_ratio"]
        result.ratio_to = "parallel.raw"
        result.target = "<= 1.2x the raw pipe, same rounds"
        result.met = result.ratio <= 1.2


def _partial(bench: Bench, results: list[Result]) -> None:
    """With ACME_MV_BENCH_PARTIAL_JSON set: the figures so far, written after every round
    (a 1 M-order round takes minutes on a busy box; a stopped run keeps its whole rounds)."""
    path = os.environ.get("ACME_MV_BENCH_PARTIAL_JSON")
    if not path:
        return
    from benchmarks import report

    for result in results:
        bench.results[result.name] = result
    report.write_json(bench, Path(path))


def measure(bench: Bench) -> list[Result]:
    with guarded(bench, "parallel", "first copy vs raw pipe") as found:
        migrated(bench)
        _scratch_tables(bench)
        rows = sum(bench.counts.get(t, 0) for t in raw_copy.TABLES)
        raw = Result("parallel.raw", "raw COPY binary pipe, index-free, same rounds", rows=rows)
        raw_pk = Result(
            "parallel.raw_pk", "raw COPY binary pipe, source's primary keys, same rounds", rows=rows
        )
        variants = [
            (
                n,
                Result(
                    variant_name(n),
                    "acme-mv sync --full, empty warehouse"
                    if n == 1
                    else f"acme-mv sync --full --jobs {n}, empty warehouse",
                    rows=rows,
                ),
            )
            for n in JOBS
        ]
        for result in (raw, raw_pk, *(r for _, r in variants)):
            result.extra["load"] = []
        for _, result in variants:
            result.extra["phases"] = []
        log = logging.getLogger("benchmarks")
        for i in range(bench.rounds):
            _empty_scratch(bench)
            for result, schema in ((raw, raw_copy.SCRATCH), (raw_pk, SCRATCH_PK)):
                result.extra["load"].append(_load())
                _cpu_timed(result, functools.partial(_raw, bench, schema))
                _bytes_per_row(bench, result, schema)
                log.info("round %d %s: %.1f s", i + 1, result.name, result.seconds[-1])
            for n, result in variants:
                empty_staging(bench)
                result.extra["load"].append(_load())
                phases: list[list[str]] = result.extra["phases"]
                _cpu_timed(result, functools.partial(_sync, bench, n, phases))
                _bytes_per_row(bench, result, "staging")
                log.info(
                    "round %d --jobs %d: %.1f s (load %s)", i + 1, n, result.seconds[-1], _load()
                )
            _ratios(variants, raw, raw_pk)
            _partial(bench, [raw, raw_pk, *(result for _, result in variants)])
        found.extend([raw, raw_pk, *(result for _, result in variants)])
        with bench.connect("warehouse") as wh:
            pg.drop_schema(wh, raw_copy.SCRATCH)
            pg.drop_schema(wh, SCRATCH_PK)
    return found


# -- a run's rounds side by side, from its JSON (python -m benchmarks.parallel_copy FILE) ---

#: (phase name, pattern over one DEBUG line, which group holds the seconds)
_PHASES: tuple[tuple[str, str, int], ...] = (
    ("{t}: COPY", r"acme_mv\.(?:sync|staging)\.copy staging\.(\w+): COPY ([\d.]+) s", 2),
    (
        "{t}: indexes + ANALYZE",
        r"acme_mv\.(?:sync|staging)\.copy staging\.(\w+): "
        r".* index builds ([\d.]+) s, ANALYZE ([\d.]+) s",
        0,
    ),
    (
        "{t}: attach",
        r"acme_mv\.(?:sync|staging)\.copy staging\.(\w+): .* attach ([\d.]+) s",
        2,
    ),
    (
        "{t}: derived from the loaded versions",
        r"acme_mv\.(?:sync|staging)\.parallel staging\.(\w+): (\d+) rows derived in ([\d.]+) s",
        3,
    ),
    (
        "{t}: COPY (longest worker)",
        r"acme_mv\.(?:sync|staging)\.parallel (\w+) part \d+/\d+: \d+ rows in ([\d.]+) s",
        2,
    ),
    (
        "{t}: copied, elapsed since the load began",
        r"acme_mv\.(?:sync|staging)\.parallel staging\.(\w+): \d+ rows copied in ([\d.]+) s",
        2,
    ),
    (
        "{t}: indexes + ANALYZE done, elapsed after its copy",
        r"acme_mv\.(?:sync|staging)\.parallel staging\.(\w+): .* done ([\d.]+) s later",
        2,
    ),
    ("waiting for the workers", r"parallel load: waited ([\d.]+) s", 1),
    ("attach (partitions, state tables)", r"attached in ([\d.]+) s", 1),
    ("apply: deltas", r"first batch \d+: .*?\bdeltas ([\d.]+) s", 1),
    ("apply: state inserts", r"state inserts ([\d.]+) s", 1),
    ("apply: state index builds", r"state indexes ([\d.]+) s", 1),
    ("apply: ANALYZE of the state", r"state indexes [\d.]+ s, ANALYZE ([\d.]+) s", 1),
    ("apply in all", r"batch \d+ applied in ([\d.]+) s", 1),
    ("whole sync (to the commit)", r"batch \d+ committed in ([\d.]+) s", 1),
)


def phases(lines: list[str]) -> dict[str, float]:
    """The seconds of each phase in one sync's DEBUG lines."""
    out: dict[str, float] = {}
    for line in lines:
        for name, pattern, group in _PHASES:
            found = re.search(pattern, line)
            if found is None:
                continue
            if group == 0:  # index builds + ANALYZE of the serial path
                seconds = float(found.group(2)) + float(found.group(3))
            else:
                seconds = float(found.group(group))
            table = found.group(1) if "{t}" in name else ""
            key = name.format(t=table)
            out[key] = max(out.get(key, 0.0), seconds)  # parts of one table: the longest
    return out


def _loadavg(result: dict[str, Any], i: int) -> str:
    """The 1/5/15-minute load averages when the variant started in round ``i``."""
    return "/".join(f"{x:.1f}" for x in result["extra"]["load"][i])


def markdown(path: str) -> str:
    """The per-round table and the phase table of one ``parallel_copy`` JSON file."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    results = {r["name"]: r for r in data["measurements"] if r["name"].startswith("parallel.")}
    raw = results["parallel.raw"]
    raw_pk = results.get("parallel.raw_pk")
    variants = [r for n, r in results.items() if n not in ("parallel.raw", "parallel.raw_pk")]
    variants.sort(key=lambda r: r["extra"]["jobs"])
    head = ["round", "raw pipe: s (load)"]
    if raw_pk is not None:
        head.append("raw pipe, keys: s (ratio; load)")
    head += [f"`--jobs {r['extra']['jobs']}`: s (ratio; load)" for r in variants]
    out = [
        f"{data.get('orders', '?'):,} orders, {raw['rows']:,} rows (orders + order_items), "
        f"JSON written {data['generated_at']}; load average at the start "
        f"{'/'.join(f'{x:.1f}' for x in data['machine']['load_average_at_start'] or [])}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for i, seconds in enumerate(raw["seconds"]):
        cells = [str(i + 1), f"{seconds:.1f} ({_loadavg(raw, i)})"]
        if raw_pk is not None:
            cells.append(
                f"{raw_pk['seconds'][i]:.1f} ({raw_pk['seconds'][i] / seconds:.2f}; "
                f"{_loadavg(raw_pk, i)})"
            )
        for r in variants:
            cells.append(
                f"{r['seconds'][i]:.1f} ({r['extra']['round_ratios'][i]:.2f}; {_loadavg(r, i)})"
            )
        out.append("| " + " | ".join(cells) + " |")
    out.append(
        "| **median of the per-round ratios** | | "
        + ("| " if raw_pk is not None else "")
        + " | ".join(f"**{r['extra']['median_round_ratio']:.2f}**" for r in variants)
        + " |"
    )
    every = [raw, *([raw_pk] if raw_pk is not None else []), *variants]
    if raw_pk is not None and all("median_round_ratio_pk" in r["extra"] for r in variants):
        out.append(
            "| median ratio to the pipe with keys | | | "
            + " | ".join(f"{r['extra']['median_round_ratio_pk']:.2f}" for r in variants)
            + " |"
        )
    if all(r["extra"].get("bytes_per_row") for r in every):
        out.append(
            "| bytes written per live source row | "
            + " | ".join(f"{statistics.median(r['extra']['bytes_per_row']):.0f}" for r in every)
            + " |"
        )
    if all(r["extra"].get("to_source") for r in every):
        out.append(
            "| the same over the source's tables (with their indexes) | "
            + " | ".join(f"{statistics.median(r['extra']['to_source']):.2f}x" for r in every)
            + " |"
        )
    if all(r["extra"].get("cpu") for r in every):
        out += [
            "",
            "CPU seconds, median over the rounds (the box's total, all processes; the clients:"
            " psql or the sync's Python and its worker processes; the rest is the server):",
            "",
            "| CPU | raw pipe | "
            + ("raw pipe, keys | " if raw_pk is not None else "")
            + " | ".join(f"`--jobs {r['extra']['jobs']}`" for r in variants)
            + " |",
            "|---|" + "--:|" * len(every),
        ]
        for label, key in (("box", "box_s"), ("clients", "clients_s")):
            cells = [f"{statistics.median(c[key] for c in r['extra']['cpu']):.1f}" for r in every]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        server = [
            f"{statistics.median(c['box_s'] - c['clients_s'] for c in r['extra']['cpu']):.1f}"
            for r in every
        ]
        out.append("| server (box - clients) | " + " | ".join(server) + " |")
    out += ["", "Phases, median over the rounds (seconds; the sync's DEBUG log):", ""]
    per_variant = [[phases(lines) for lines in r["extra"]["phases"]] for r in variants]
    names: list[str] = []
    for rounds_ in per_variant:
        for found in rounds_:
            names += [n for n in found if n not in names]
    out.append("| phase | " + " | ".join(f"`--jobs {r['extra']['jobs']}`" for r in variants) + " |")
    out.append("|---|" + "--:|" * len(variants))
    for name in names:
        cells = []
        for rounds_ in per_variant:
            values = [found[name] for found in rounds_ if name in found]
            cells.append(f"{statistics.median(values):.1f}" if values else "")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:]:
        sys.stdout.write(markdown(name))
