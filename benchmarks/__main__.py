"""``python -m benchmarks``: build the sample source, run the measurements, report.

    python -m benchmarks                         # embedded server, 1,000,000 orders, 3 rounds
    python -m benchmarks --orders 20000 --rounds 3 --only raw_copy,pandas_baseline
    python -m benchmarks --database-url postgresql://bench@host/postgres --skip scale

The server URL needs a role that may CREATE DATABASE: the run uses two
databases on it, ``acme_bench_source`` (kept between runs at the same
--orders; --fresh rebuilds it) and ``acme_bench_warehouse`` (recreated each run).
On PostgreSQL 15 (production's version), let ``.ci/with-pg15`` start a server
and pass its URL:

    .ci/with-pg15 sh -c 'python -m benchmarks --database-url "$ACME_MV_TEST_DATABASE_URL" \
        --orders 2000 --rounds 1 --only parallel_copy'
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

import psycopg

from acme_mv.db import ensure_database
from benchmarks import pg, report, source
from benchmarks.core import Bench

#: the measurements, in the order they run (later ones reuse earlier state)
MEASUREMENTS = (
    "raw_copy",
    "acme_sync",
    "parallel_copy",
    "pandas_baseline",
    "dlt_baseline",
    "refresh",
    "refresh_growth",
    "profile",
    "one_percent",
    "rollover",
    "export",
    "dashboard",
    "freshness",
    "scale",
)
SOURCE_DB = "acme_bench_source"
WAREHOUSE_DB = "acme_bench_warehouse"
DEFAULT_JSON = Path("benchmarks/results/latest.json")


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MEASUREMENTS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown measurement(s) {', '.join(unknown)}; known: {', '.join(MEASUREMENTS)}"
        )
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="admin URL of the server to use (default: start the embedded one)",
    )
    parser.add_argument(
        "--orders",
        type=int,
        default=1_000_000,
        help="sample orders (~27 rows each); default 1,000,000",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement; default 3")
    parser.add_argument(
        "--only",
        type=_names,
        default=None,
        help=f"comma-separated subset of: {','.join(MEASUREMENTS)}",
    )
    parser.add_argument(
        "--skip", type=_names, default=[], help="comma-separated measurements to leave out"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help=f"where to write all figures (a result file: docs/benchmarks.md); default "
        f"{DEFAULT_JSON}, git-ignored: name a run worth keeping and commit it",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="rebuild the source even when it has --orders orders"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each round")
    args = parser.parse_args(argv)
    if args.orders < 1 or args.rounds < 1:
        parser.error("--orders and --rounds must be at least 1")
    return args


def selected(args: argparse.Namespace) -> list[str]:
    chosen = args.only or list(MEASUREMENTS)
    return [m for m in MEASUREMENTS if m in chosen and m not in args.skip]


def open_bench(server_url: str, *, orders: int, rounds: int) -> Bench:
    """Create the two databases on the server and point a Bench at them."""
    with psycopg.connect(server_url, autocommit=True) as server:
        ensure_database(server, SOURCE_DB)
        ensure_database(server, WAREHOUSE_DB, recreate=True)
    return Bench(
        source_url=pg.with_db(server_url, SOURCE_DB),
        warehouse_url=pg.with_db(server_url, WAREHOUSE_DB),
        orders=orders,
        rounds=rounds,
        server_url=server_url,
    )


def run(bench: Bench, names: list[str]) -> None:
    for name in names:
        logging.getLogger("benchmarks").info("measuring %s", name)
        importlib.import_module(f"benchmarks.{name}").measure(bench)
    report.compute_ratios(bench.results)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("benchmarks").setLevel(logging.INFO)
    server_url = args.database_url
    if server_url is None:
        from acme_mv import embedded

        server_url = embedded.start("bench")
    bench = open_bench(server_url, orders=args.orders, rounds=args.rounds)
    source.prepare(bench, fresh=args.fresh)
    run(bench, selected(args))
    sys.stdout.write(report.markdown(bench))
    report.write_json(bench, args.json)
    sys.stderr.write(f"figures written to {args.json}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
