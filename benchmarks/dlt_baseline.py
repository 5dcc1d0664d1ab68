"""(4) dlt: ``sql_database`` source, incremental on ``updated_at``, into the same warehouse.

Postgres destination, pyarrow backend, ``merge`` on the primary key (the
configuration an incremental copy of mutable rows needs). Initial load: a
fresh pipeline and dataset each round. Incremental: after one initial load,
each round changes 1% of the orders and their items on the source and runs
the same pipeline again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from psycopg import sql

from benchmarks import pg, source
from benchmarks.core import Bench, Result, guarded, require, rounds

NAME = "dlt_baseline"
DATASET = "bench_dlt"
TABLES = {"orders": "order_id", "order_items": "order_item_id"}
BACKEND = "pyarrow"
#: dlt's fastest way into postgres: csv files loaded with COPY (its default,
#: insert_values, is several times slower); the strongest baseline is the fair one
FILE_FORMAT = "csv"


def dlt_credentials(url: str) -> Any:
    """dlt's postgres credentials for a libpq URL; a socket directory as a %-encoded host."""
    from dlt.destinations.impl.postgres.configuration import PostgresCredentials
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    host = str(params.get("host") or os.environ.get("PGHOST") or "localhost")
    creds = PostgresCredentials()
    creds.database = str(params.get("dbname") or "")
    creds.username = str(params.get("user") or os.environ.get("PGUSER") or "postgres")
    # dlt insists on a password; a server that trusts the connection ignores it
    creds.password = str(params.get("password") or os.environ.get("PGPASSWORD") or "unused")
    creds.host = quote(host, safe="") if host.startswith("/") else host
    creds.port = int(params.get("port") or 5432)
    return creds


def _pipeline(bench: Bench, workdir: Path) -> Any:
    import dlt
    from dlt.sources.sql_database import sql_database
    from sqlalchemy import create_engine

    from benchmarks.sa import sqlalchemy_url

    engine = create_engine(sqlalchemy_url(bench.source_url))
    src = sql_database(engine, schema="operations", table_names=list(TABLES), backend=BACKEND)
    for table, key in TABLES.items():
        src.resources[table].apply_hints(
            incremental=dlt.sources.incremental("updated_at"),
            primary_key=key,
            write_disposition="merge",
        )
    pipeline = dlt.pipeline(
        pipeline_name="acme_bench",
        pipelines_dir=str(workdir),
        destination=dlt.destinations.postgres(credentials=dlt_credentials(bench.warehouse_url)),
        dataset_name=DATASET,
    )
    return pipeline, src, engine


def verify(bench: Bench) -> bool:
    """Does the dlt dataset hold exactly the source's changed rows (updated_by = -1)?"""
    ok = True
    with bench.connect("source") as src, bench.connect("warehouse") as wh:
        for table in TABLES:
            query = sql.SQL(
                "SELECT count(*), sum(hashtext(updated_at::text)) FROM {} WHERE updated_by = -1"
            )
            a = src.execute(query.format(sql.Identifier("operations", table))).fetchone()
            b = wh.execute(query.format(sql.Identifier(DATASET, table))).fetchone()
            ok = ok and a == b
    return ok


def measure(bench: Bench) -> list[Result]:
    with guarded(bench, "dlt", "dlt sql_database") as found:
        require("dlt", "pipeline")
        os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
        workdir = Path(tempfile.mkdtemp(prefix="acme-bench-dlt-"))
        rows = bench.counts.get("orders", 0) + bench.counts.get("order_items", 0)
        state: dict[str, Any] = {}

        def reset() -> None:
            shutil.rmtree(workdir, ignore_errors=True)
            with bench.connect("warehouse") as conn:
                pg.drop_schema(conn, DATASET)
                pg.drop_schema(conn, f"{DATASET}_staging")
            if "engine" in state:
                state["engine"].dispose()
            state["pipeline"], state["source"], state["engine"] = _pipeline(bench, workdir)

        def load() -> None:
            info = state["pipeline"].run(state["source"], loader_file_format=FILE_FORMAT)
            info.raise_on_failed_jobs()

        initial = Result(
            "dlt.initial", f"dlt initial load ({BACKEND}, {FILE_FORMAT}, merge)", rows=rows
        )
        try:
            rounds(bench, initial, load, before=reset)
            found.append(initial)
            changed: list[int] = []

            def change() -> None:
                changed.append(source.change_orders(bench))
                # a new source object: same pipeline state, fresh resources
                state["engine"].dispose()
                state["pipeline"], state["source"], state["engine"] = _pipeline(bench, workdir)

            incremental = Result("dlt.incremental", "dlt incremental load after a 1% change")
            rounds(bench, incremental, load, before=change)
            incremental.rows = round(sum(changed) / len(changed))
            incremental.extra["verified"] = verify(bench)
            found.append(incremental)
        finally:
            if "engine" in state:
                state["engine"].dispose()
            shutil.rmtree(workdir, ignore_errors=True)
    return found
