"""What the standalone latency benchmarks (``python -m benchmarks.cdc``, ``.freshness``,
``.source_cost``) share: their common options, the server, the databases, the JSON file."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import psycopg

from benchmarks import pg, source
from benchmarks.core import Bench


def parser(prog: str, doc: str | None, *, orders: int) -> argparse.ArgumentParser:
    """An argument parser with --orders, --database-url and --json."""
    out = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    out.add_argument("--orders", type=int, default=orders, help="sample orders on the source")
    out.add_argument(
        "--database-url", default=None, help="admin URL of the server (default: embedded)"
    )
    out.add_argument("--json", default=None, help="write the figures here")
    return out


def server(args: argparse.Namespace) -> str:
    """Log to stderr; the server's admin URL (the embedded one unless --database-url)."""
    from acme_mv import embedded

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    return str(args.database_url or embedded.start("bench"))


def bench(
    server_url: str,
    *,
    source_db: str,
    warehouses: list[str],
    orders: int,
    warehouse_db: str | None = None,
) -> Bench:
    """The source at ``orders`` (built unless already there) and fresh ``warehouses`` (the
    first is the Bench's, unless ``warehouse_db`` names an existing one to reuse)."""
    from acme_mv.db import ensure_database

    with psycopg.connect(server_url, autocommit=True) as conn:
        ensure_database(conn, source_db)
        for name in warehouses:
            ensure_database(conn, name, recreate=True)
    made = Bench(
        source_url=pg.with_db(server_url, source_db),
        warehouse_url=pg.with_db(server_url, warehouse_db or warehouses[0]),
        orders=orders,
        rounds=1,
        server_url=server_url,
    )
    source.prepare(made, fresh=False)
    return made


def write(path: str | None, meta: dict[str, Any], results: dict[str, Any]) -> None:
    """The figures and the run's settings as JSON, with the load average at the end."""
    if path:
        with open(path, "w") as fh:
            json.dump(
                {**meta, "load": os.getloadavg(), "results": results}, fh, indent=2, default=str
            )
