"""``acme-mv sync`` and ``acme-mv status`` as a Python API.

One sync is one batch: one warehouse transaction (advisory lock, batch id,
every table's rows, the new cursors) reading one source REPEATABLE READ
snapshot. A sync killed at any moment leaves nothing behind; the next one
starts from the last committed cursors.

On the source, in this order: the watermark (the next cursor) in autocommit
mode; then the snapshot transaction, whose first statements take ACCESS SHARE
on every table to read (no snapshot yet: a table rewrite still running is
waited for), whose first query checks the schema (and so takes the snapshot,
after the locks) and whose next ones read the tables. See docs/design.md.

    from acme_mv.config import Settings
    from acme_mv.sync import sync, status

    result = sync(Settings.from_env(), tables=["orders"])
    for t in status(Settings.from_env()):
        print(t.table, t.cursor, t.lag_s)
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.rows import args_row, dict_row

from acme_mv.config import Settings
from acme_mv.db import Conn, connection, is_infinite, load_infinity, show_timestamp
from acme_mv.errors import ConfigError
from acme_mv.staging import copy, parallel
from acme_mv.staging.batch import open_batch
from acme_mv.staging.copy import Mode
from acme_mv.staging.parallel import DEFAULT_JOBS
from acme_mv.staging.tables import TABLES, TableSpec, check_schema
from acme_mv.sync import cursors, deletes, source
from acme_mv.sync.deletes import DeletedEstimate, missing_keys
from acme_mv.sync.source import DEFAULT_FALLBACK_LAG, DEFAULT_LOCK_TIMEOUT, SourceLocked

__all__ = [
    "DEFAULT_FALLBACK_LAG",
    "DEFAULT_JOBS",
    "DEFAULT_LOCK_TIMEOUT",
    "DeletedEstimate",
    "TABLES",
    "Mode",
    "Progress",
    "SourceLocked",
    "SyncResult",
    "TableResult",
    "TableStatus",
    "missing_keys",
    "status",
    "sync",
]

log = logging.getLogger(__name__)

#: application_name of the sync's own sessions; the watermark ignores them
#: (they never write ``operations``), so a waiting sync or the warehouse
#: transaction of the one-database deployment does not hold the cursor back
SYNC_APPLICATION_NAME = "acme-mv sync"


@dataclass(frozen=True, kw_only=True)
class TableResult:
    table: str
    mode: Mode
    rows_read: int
    rows_new: int
    rows_deleted: int
    bytes: int
    seconds: float
    cursor: dt.datetime

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, kw_only=True)
class SyncResult:
    batch_id: int
    seconds: float
    #: when this sync's source snapshot was about to be taken (this machine's clock)
    read_at: dt.datetime
    tables: dict[str, TableResult] = field(default_factory=dict)

    @property
    def rows_new(self) -> int:
        """Rows that landed in staging: new versions, and changed or deleted mirror rows."""
        return sum(t.rows_new + t.rows_deleted for t in self.tables.values())


class Progress(Protocol):
    """What a sync reports while it runs (the CLI draws bars or logs lines)."""

    def start(self, table: str, mode: Mode) -> None: ...

    def advance(self, table: str, nbytes: int) -> None: ...

    def finish(self, result: TableResult) -> None: ...


class _Silent:
    def start(self, table: str, mode: Mode) -> None:
        pass

    def advance(self, table: str, nbytes: int) -> None:
        pass

    def finish(self, result: TableResult) -> None:
        pass


def _require_head(wh: Conn) -> None:
    """:func:`acme_mv.revision.require_head`."""
    from acme_mv.revision import require_head

    require_head(wh)


def select_tables(names: Iterable[str] | None) -> list[TableSpec]:
    """The specs of ``names`` in dependency-free contract order (all when None)."""
    if names is None:
        return list(TABLES.values())
    wanted = list(dict.fromkeys(names))
    for name in wanted:
        if name not in TABLES:
            raise ConfigError(
                f"Unknown table {name!r}; choose from {', '.join(TABLES)}", setting="tables"
            )
    return [spec for name, spec in TABLES.items() if name in wanted]


def sync(
    settings: Settings,
    *,
    tables: Iterable[str] | None = None,
    full: bool = False,
    wait: bool = True,
    progress: Progress | None = None,
    fallback_lag: dt.timedelta = DEFAULT_FALLBACK_LAG,
    lock_timeout: dt.timedelta = DEFAULT_LOCK_TIMEOUT,
    warned: set[str] | None = None,
    jobs: int = DEFAULT_JOBS,
) -> SyncResult:
    """Copy what changed in the source into staging, as one batch; see the module doc.

    ``warned``: warnings about the source already given (keys of
    :func:`acme_mv.sync.source.read_watermark`), kept by a caller that syncs
    again and again (``acme-mv run``) so that each is logged once per run;
    None: this sync logs every warning that applies.

    ``jobs > 1``: a first copy of orders / order_items (empty version tables)
    runs in parallel sessions and its partitions are attached at commit
    (:mod:`acme_mv.staging.parallel`).

    Raises NotMigrated, ConnectionFailed, SchemaDrift (before copying anything),
    Busy (``wait=False`` and another sync holds the lock), SourceLocked (a
    source table stayed locked, e.g. by a rewrite, for ``lock_timeout``).
    """
    specs = select_tables(tables)
    report = progress or _Silent()
    began = time.monotonic()
    with connection(settings.database_url, role="warehouse") as wh:
        _require_head(wh)
        wh.execute("SELECT set_config('application_name', %s, false)", (SYNC_APPLICATION_NAME,))
        with connection(settings.effective_source_url, role="source", autocommit=True) as src:
            src.execute(
                "SELECT set_config('application_name', %s, false)", (SYNC_APPLICATION_NAME,)
            )
            with open_batch(wh, tables=[s.name for s in specs], wait=wait) as batch:
                modes: dict[str, Mode] = {
                    spec.name: copy.mode_of(wh, spec, full=full) for spec in specs
                }
                # --full appends (copy.load_full_diff) after comparing the tables whole with
                # the source (run --full-every reads this)
                batch.compared_tables = [name for name, mode in modes.items() if mode == "full"]
                saved = cursors.saved(wh)
                read_at = dt.datetime.now(dt.UTC)
                # before the snapshot, outside it; waiting for the locks below only makes it
                # older, which is safe: the next sync re-reads a little more
                mark = source.read_watermark(
                    src,
                    ignore_application=SYNC_APPLICATION_NAME,
                    fallback_lag=fallback_lag,
                    warned=warned,
                )
                src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                src.read_only = True
                src.autocommit = False
                results: dict[str, TableResult] = {}
                with src.transaction():
                    source.lock_tables(src, specs, timeout=lock_timeout)  # no snapshot yet
                    check_schema(src, specs)  # the first query: the snapshot starts here
                    loader = _start_parallel(
                        settings, src, wh, specs, modes, batch.batch_id, jobs=jobs, report=report
                    )
                    with batch.parallel(loader):
                        for spec in specs:
                            if loader is None or spec.name not in loader:
                                results[spec.name] = _sync_table(
                                    src,
                                    wh,
                                    spec,
                                    modes[spec.name],
                                    saved.get(spec.name),
                                    mark,
                                    batch.batch_id,
                                    report,
                                )
                    for name, load in loader.loads.items() if loader is not None else ():
                        results[name] = _record(
                            src,
                            wh,
                            TABLES[name],
                            modes[name],
                            mark,
                            batch.batch_id,
                            report,
                            rows_read=load.rows,
                            rows_new=load.rows,
                            deleted=0,
                            nbytes=load.bytes,
                            started_at=read_at,
                            seconds=load.finished - load.started,
                        )
            # leaving open_batch applied the batch; leaving the connection block commits:
            # rows, cursors and the batch row together
    result = SyncResult(
        batch_id=batch.batch_id, seconds=time.monotonic() - began, read_at=read_at, tables=results
    )
    log.debug("batch %s committed in %.2f s", result.batch_id, result.seconds)
    return result


def _sync_table(
    src: Conn,
    wh: Conn,
    spec: TableSpec,
    mode: Mode,
    cursor: dt.datetime | None,
    mark: source.Watermark,
    batch_id: int,
    report: Progress,
) -> TableResult:
    started_at = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    nbytes = 0

    def on_bytes(n: int) -> None:
        nonlocal nbytes
        nbytes += n
        report.advance(spec.name, n)

    report.start(spec.name, mode)
    query = source.select_rows(spec, cursor if mode == "incremental" else None)
    rows_read, rows_new, deleted = copy.load(src, query, wh, spec, mode, on_bytes)
    return _record(
        src,
        wh,
        spec,
        mode,
        mark,
        batch_id,
        report,
        rows_read=rows_read,
        rows_new=rows_new,
        deleted=deleted,
        nbytes=nbytes,
        started_at=started_at,
        seconds=time.monotonic() - t0,
    )


def _start_parallel(
    settings: Settings,
    src: Conn,
    wh: Conn,
    specs: list[TableSpec],
    modes: dict[str, Mode],
    batch_id: int,
    *,
    jobs: int,
    report: Progress,
) -> parallel.Loader | None:
    """Export the snapshot and start the workers of a parallel first copy (None: copy serially)."""
    initial = [spec for spec in specs if modes[spec.name] == "initial"]
    if jobs < 2 or not initial:
        return None
    row = src.execute("SELECT pg_export_snapshot()").fetchone()
    assert row is not None
    started: set[str] = set()
    guard = threading.Lock()

    def begin(table: str) -> None:
        with guard:
            if table not in started:
                started.add(table)
                report.start(table, "initial")

    def on_bytes(table: str, nbytes: int) -> None:  # called from the loader's threads
        begin(table)
        report.advance(table, nbytes)

    loader = parallel.start(
        src=src,
        wh=wh,
        source_url=settings.effective_source_url,
        warehouse_url=settings.database_url,
        snapshot=str(row[0]),
        specs=initial,
        batch_id=batch_id,
        jobs=jobs,
        application_name=SYNC_APPLICATION_NAME,
        on_bytes=on_bytes,
    )
    for name in loader.targets if loader is not None else ():
        begin(name)
    return loader


def _record(
    src: Conn,
    wh: Conn,
    spec: TableSpec,
    mode: Mode,
    mark: source.Watermark,
    batch_id: int,
    report: Progress,
    *,
    rows_read: int,
    rows_new: int,
    deleted: int,
    nbytes: int,
    started_at: dt.datetime,
    seconds: float,
) -> TableResult:
    """Save one table's cursor and figures in the batch; report it."""
    cursors.save(
        wh,
        cursors.TableRun(
            table=spec.name,
            cursor=mark.cursor,
            batch_id=batch_id,
            started_at=started_at,
            seconds=seconds,
            rows_read=rows_read,
            rows_new=rows_new + deleted,
            source_max_updated_at=source.max_updated_at(src, spec, only_indexed=True),
            mode=mode,
        ),
    )
    result = TableResult(
        table=spec.name,
        mode=mode,
        rows_read=rows_read,
        rows_new=rows_new,
        rows_deleted=deleted,
        bytes=nbytes,
        seconds=seconds,
        cursor=mark.cursor,
    )
    report.finish(result)
    return result


@dataclass(frozen=True, kw_only=True)
class TableStatus:
    """One table's sync state, as ``acme-mv status`` shows it."""

    table: str
    kind: str
    cursor: dt.datetime | None
    last_batch_id: int | None
    last_finished_at: dt.datetime | None
    last_duration_s: float | None
    last_rows_read: int | None
    last_rows_copied: int | None
    last_mode: str | None
    #: staged rows (every version for orders/order_items): exact with
    #: ``exact=True``, else the planner's estimate (pg_class.reltuples)
    staged_rows: int | None
    staged_rows_exact: bool
    #: distinct keys: exact with ``exact=True`` (a full scan), mirrors always
    distinct_keys: int | None
    source_max_updated_at: dt.datetime | None
    #: source max(updated_at) minus the cursor, in seconds, never below 0
    lag_s: float | None
    #: with ``exact=True``, orders/order_items: staged keys deleted at the source
    #: since (at least this many; only ``sync --full`` removes them), see
    #: :mod:`acme_mv.sync.deletes`; None otherwise
    deleted_at_source: int | None = None

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = show_timestamp(value) if isinstance(value, dt.datetime) else value
        return out


#: a table's row of staging.sync_state, named as the fields of :class:`TableStatus` (dict_row)
_STATE_SQL = """
SELECT cursor_value AS cursor, last_batch_id, last_finished_at, last_duration_s,
       last_rows_read, last_rows_copied, last_mode
FROM staging.sync_state WHERE table_name = %s
"""
#: a table never synced has no row: all of its fields are None
_NEVER_SYNCED: dict[str, Any] = dict.fromkeys(
    ("cursor", "last_batch_id", "last_finished_at", "last_duration_s")
    + ("last_rows_read", "last_rows_copied", "last_mode")
)


def status(settings: Settings, *, exact: bool = False) -> list[TableStatus]:
    """Per table: cursor, last run, staged rows, lag behind the source.

    Infinite timestamps (a source ``updated_at`` of ``'infinity'``) load as
    :data:`acme_mv.db.INFINITY` / ``MINUS_INFINITY``; the lag against one is None (unknown).
    With change capture set up (a position in ``staging.cdc_state``) the source's
    ``max(updated_at)`` is not read and the warning about its index is not given: change
    capture never reads the tables (its lag is the slot's, :func:`acme_mv.cdc.status`).
    """
    with connection(settings.database_url, role="warehouse") as wh:
        load_infinity(wh)
        _require_head(wh)
        capturing = bool(wh.execute("SELECT 1 FROM staging.cdc_state LIMIT 1").fetchone())
        cur = wh.cursor(row_factory=dict_row)
        saved = {
            spec.name: cur.execute(_STATE_SQL, (spec.name,)).fetchone() or _NEVER_SYNCED
            for spec in TABLES.values()
        }
        counts = {spec.name: _staged_counts(wh, spec, exact=exact) for spec in TABLES.values()}
    specs = list(TABLES.values())
    deleted: dict[str, int] = {}
    with connection(settings.effective_source_url, role="source", autocommit=True) as src:
        load_infinity(src)
        check_schema(src, specs, warn_unindexed=not capturing)
        source_max = {
            spec.name: None if capturing else source.max_updated_at(src, spec) for spec in specs
        }
        for spec in deletes.APPEND_ONLY if exact else ():
            _, distinct, top = counts[spec.name]
            assert distinct is not None
            found = deletes.DeletedEstimate(
                table=spec.name,
                key=spec.key,
                max_staged_key=top,
                staged_keys=distinct,
                source_keys=deletes.source_keys(src, spec, up_to=top),
            )
            deleted[spec.name] = found.deleted
    out = []
    for spec in specs:
        row = saved[spec.name]
        cursor: dt.datetime | None = row["cursor"]
        smax = source_max[spec.name]
        lag = _lag(cursor, smax)
        rows, distinct, _ = counts[spec.name]
        out.append(
            TableStatus(
                table=spec.name,
                kind=spec.kind,
                **row,
                staged_rows=rows,
                staged_rows_exact=exact,
                distinct_keys=distinct,
                source_max_updated_at=smax,
                lag_s=lag,
                deleted_at_source=deleted.get(spec.name),
            )
        )
    return out


def _lag(cursor: dt.datetime | None, source_max: dt.datetime | None) -> float | None:
    """``source_max - cursor`` in seconds, at least 0; None when unknown (a side missing, or
    infinite and not equal to the other)."""
    if cursor is None or source_max is None:
        return None
    if is_infinite(cursor) or is_infinite(source_max):
        return 0.0 if cursor == source_max else None
    return max((source_max - cursor).total_seconds(), 0.0)


def _staged_counts(
    conn: Conn, spec: TableSpec, *, exact: bool
) -> tuple[int | None, int | None, int | None]:
    """(staged rows, live keys, highest live key):
    exact (one scan each), or the planner's estimates.

    For orders/order_items the rows are every kept version (all partitions) and the live keys
    those of the latest-state table ``staging.<t>_state`` (a tombstoned key is not there); a
    mirror holds each live key once.
    """
    table = sql.Identifier("staging", spec.name)
    keys = table if spec.kind == "mirror" else sql.Identifier("staging", f"{spec.name}_state")
    if exact:
        key = sql.Identifier(spec.key)
        counted = (
            conn.cursor(row_factory=args_row(_exact_counts))
            .execute(
                sql.SQL(
                    "SELECT (SELECT count(*) FROM {table}), count(*), max({key}) FROM {keys}"
                ).format(key=key, table=table, keys=keys)
            )
            .fetchone()
        )
        assert counted is not None  # aggregates: one row
        return counted
    # a partitioned table has no rows of its own: sum the estimates of its partitions
    row = conn.execute(
        "SELECT sum(c.reltuples) FILTER (WHERE c.reltuples "
        ">= 0)::bigint, bool_or(c.reltuples >= 0), "
        "(SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass) "
        "FROM pg_partition_tree(%s::regclass) AS t JOIN "
        "pg_class AS c ON c.oid = t.relid WHERE t.isleaf",
        (keys.as_string(conn), table.as_string(conn)),
    ).fetchone()
    assert row is not None  # aggregates: one row
    total, analyzed, live = row  # reltuples -1 (never analyzed): no estimate
    return (total if analyzed else None), (live if live is not None and live >= 0 else None), None


def _exact_counts(rows: int, keys: int, top: int | None) -> tuple[int, int, int | None]:
    return rows, keys, top
