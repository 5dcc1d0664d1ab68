"""(1) The physical limit: ``psql COPY TO STDOUT | psql COPY FROM STDIN``.

For orders and order_items, binary and text, into an empty table of the same
shape (no index) in the warehouse database, truncated between rounds. The
two psql processes stream straight into each other; nothing passes through
Python.
"""

from __future__ import annotations

import subprocess
from functools import partial

from psycopg import sql

from benchmarks import pg
from benchmarks.core import Bench, Result, guarded, rounds

NAME = "raw_copy"
SCRATCH = "bench_raw"
TABLES = ("orders", "order_items")
FORMATS = ("binary", "text")


def pipe(bench: Bench, table: str, fmt: str, *, schema: str = SCRATCH) -> None:
    """One COPY out of the source piped into one COPY into ``schema.table`` (the scratch table)."""
    psql = pg.psql_binary()
    options = sql.SQL("(FORMAT binary)" if fmt == "binary" else "(FORMAT text)")
    with bench.connect("source") as conn:
        copy_out = (
            sql.SQL("COPY {} TO STDOUT {}")
            .format(sql.Identifier("operations", table), options)
            .as_string(conn)
        )
        copy_in = (
            sql.SQL("COPY {} FROM STDIN {}")
            .format(sql.Identifier(schema, table), options)
            .as_string(conn)
        )
    base = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    with subprocess.Popen(
        [*base, "-c", copy_out],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pg.libpq_env(bench.source_url),
    ) as reader:
        assert reader.stdout is not None
        writer = subprocess.run(
            [*base, "-c", copy_in],
            stdin=reader.stdout,
            capture_output=True,
            env=pg.libpq_env(bench.warehouse_url),
        )
        reader.stdout.close()
        read_err = reader.stderr.read() if reader.stderr else b""
    if reader.returncode or writer.returncode:
        raise RuntimeError(bench.scrub((read_err + writer.stderr).decode(errors="replace").strip()))


def copied(bench: Bench, table: str) -> int:
    with bench.connect("warehouse") as wh:
        row = wh.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(SCRATCH, table))
        ).fetchone()
    return int(row[0]) if row else 0


def measure(bench: Bench) -> list[Result]:
    with guarded(bench, NAME, "raw psql COPY pipe") as found:
        with bench.connect("source") as src, bench.connect("warehouse") as wh:
            for table in TABLES:
                pg.create_like(wh, SCRATCH, table, pg.columns(src, "operations", table))

        def truncate(table: str) -> None:
            with bench.connect("warehouse") as wh:
                wh.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(SCRATCH, table)))

        for fmt in FORMATS:
            per_table = []
            for table in TABLES:
                result = Result(
                    f"raw.{table}.{fmt}", f"raw COPY {fmt}: {table}", rows=bench.counts.get(table)
                )
                rounds(
                    bench,
                    result,
                    partial(pipe, bench, table, fmt),
                    before=partial(truncate, table),
                )
                result.extra["copied_rows"] = copied(bench, table)
                per_table.append(result)
                found.append(result)
            both = Result(
                f"raw.{fmt}",
                f"raw COPY {fmt}: orders + order_items",
                seconds=[sum(times) for times in zip(*(r.seconds for r in per_table), strict=True)],
                rows=sum(r.rows or 0 for r in per_table),
            )
            found.append(both)
        with bench.connect("warehouse") as wh:
            pg.drop_schema(wh, SCRATCH)
    return found
