"""The initial copy in parallel: workers in one exported snapshot, the batch's partition
and the latest-state tables put in place at commit.

Where it applies: a first copy (``initial``: the version table is empty) of
``orders`` / ``order_items`` with ``jobs > 1`` and at least
:data:`MIN_PART_BLOCKS` source blocks together; by the cursor sync
(``acme-mv sync``) and by change capture's initial copy (``acme-mv cdc
setup``, in the slot's exported snapshot). Everything else stays on the
serial path of :mod:`acme_mv.staging.copy`, which loads a first copy the same
way in the batch's own transaction (:func:`acme_mv.staging.copy.load_fresh`).

How:

1. The caller's REPEATABLE READ source transaction exports its snapshot
   (``pg_export_snapshot()``; change capture passes the slot's); each worker
   opens its own source session, imports it (``SET TRANSACTION SNAPSHOT``),
   takes ``ACCESS SHARE`` on its table and copies one part: a range of the
   table's blocks (``ctid >= '(lo,0)' AND ctid < '(hi,0)'``, a TID range scan,
   so parts read disjoint blocks and the source is read once in all). Every
   worker sees the same rows as the caller's own transaction.
2. Rows go as raw binary COPY blocks into a standalone table
   ``staging._acme_load_<batch>_<table>`` (:func:`acme_mv.staging.partitions.create_sql`:
   no index, the batch's range as a CHECK), committed by the workers;
   ``_batch_id`` takes the batch id from the workers' ``acme_mv.batch_id``
   setting. A table copied in one part is created in the worker's own
   transaction and loaded with ``COPY ... FREEZE``. Each part runs in a worker
   process (the COPY loop runs Python once per row and holds the GIL:
   threads do not add up).
3. Once a table's parts are in, each index of the partitioned table is built
   on it in its own session (plain ``CREATE INDEX``: builds of one table share
   its SHARE lock) and the table is ANALYZEd; beside them, another session
   derives the table's latest state from the loaded rows (one ``INSERT ...
   SELECT`` of the report columns into a new table, :data:`DERIVE_STATE_SQL`:
   in a first batch every row is its key's latest live version), whose
   indexes are then built in sessions of their own. The source is read once.
4. The caller's warehouse transaction (advisory lock, batch row, cursors)
   puts each load table in place of the batch's (empty) partition
   (:func:`acme_mv.staging.partitions.attach`: the CHECK proves the range, no
   validation scan; the built indexes are attached to the parent's, not
   rebuilt) and each state load table in place of the empty state table.
   Readers see nothing until the commit; a crash before it leaves the empty
   state, and the next sync drops the left-over load tables
   (:func:`acme_mv.staging.partitions.drop_debris`) while it holds the sync lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from acme_mv.db import Conn, Role, connect, first_line
from acme_mv.defaults import DEFAULT_JOBS as DEFAULT_JOBS
from acme_mv.errors import AcmeMvError, CopyFailed
from acme_mv.staging import copy, partitions
from acme_mv.staging.partitions import TABLES as VERSION_TABLES
from acme_mv.staging.partitions import (
    Target,
    create_sql,
    load_index_name,
    load_name,
    retarget_index,
)
from acme_mv.staging.tables import SCHEMA, TABLES, TableSpec

log = logging.getLogger(__name__)


STAGING = copy.STAGING


#: tables smaller than this are copied in one part (one COPY FREEZE): a split
#: only pays when each part has enough blocks (8 MB) to amortize a worker
#: process (0.3-1 s to start) and its sessions; a load smaller than this in all
#: is copied serially
MIN_PART_BLOCKS = 1024

#: environment variable telling a worker process its parent's pid
_PARENT_ENV = "ACME_MV_SYNC_PARENT"
#: prctl(2) option: the signal a process gets when its parent dies
_PR_SET_PDEATHSIG = 1

#: called with (table, bytes) for each chunk a worker writes; called from worker threads
OnTableBytes = Callable[[str, int], None]

_TID_RANGE_MIN_VERSION = 140000  # TID range scans (ctid >= / <) appeared in PostgreSQL 14


@dataclass(frozen=True)
class StateTarget:
    """The latest-state table of a version table, derived beside the versions' index builds.

    In a first batch every copied row is the latest live version of its key, so
    ``staging.<t>_state`` is the loaded rows' report columns with the batch id:
    a session derives them from the version load table into a new table
    (:data:`DERIVE_STATE_SQL`), its indexes are built in parallel sessions, and
    the caller's transaction puts it in place of the empty state table.
    """

    #: the version table it belongs to (orders, order_items) and the state table's name
    table: str
    name: str
    #: its columns but _batch_id (all read from the version table's columns of the same name)
    columns: tuple[str, ...]
    #: (index name, CREATE INDEX statement, constraint name or None, its kind: p or u)
    indexes: tuple[tuple[str, str, str | None, str | None], ...]
    comment: str | None


_STATE_SQL = """
SELECT pg_has_role(c.relowner, 'USAGE') AND has_schema_privilege(c.relnamespace, 'CREATE')
       AND c.relkind = 'r' AND NOT c.relhastriggers AND NOT c.relhasrules AND c.relacl IS NULL
       AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.confrelid = c.oid)
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.refobjid = c.oid
                       AND d.classid = 'pg_rewrite'::regclass),
       obj_description(c.oid, 'pg_class'),
       (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              AND a.attname <> '_batch_id')
FROM pg_class c WHERE c.oid = %s::regclass
"""


def plan_state(wh: Conn, targets: list[Target]) -> list[StateTarget]:
    """The state tables to load beside the versions: both or none.

    Only when both version tables are loaded in parallel and both state tables
    are empty (a first batch: :func:`acme_mv.staging.apply.apply_batch` would fill
    them whole) and can be replaced safely: owned by the sync's role, no
    grants, triggers, rules, views or foreign keys on them.
    """
    if sorted(t.spec.name for t in targets) != sorted(VERSION_TABLES):
        return []
    out = []
    for target in targets:
        name = f"{target.spec.name}_state"
        if not partitions.is_empty(wh, name):
            return []
        row = wh.execute(_STATE_SQL, (f"{STAGING}.{name}",)).fetchone()
        if row is None or not row[0]:
            log.info("staging.%s is filled by the batch's apply: it cannot be replaced", name)
            return []
        indexes = wh.execute(
            "SELECT i.relname, pg_get_indexdef(x.indexrelid), "
            "k.conname, k.contype::text FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid "
            "LEFT JOIN pg_constraint k ON k.conindid = x.indexrelid AND k.conrelid = x.indrelid "
            "WHERE x.indrelid = %s::regclass ORDER BY i.relname",
            (f"{STAGING}.{name}",),
        ).fetchall()
        if any(kind not in (None, "p", "u") for _, _, _, kind in indexes):
            return []  # pragma: no cover - an exclusion constraint: not rebuilt here
        out.append(
            StateTarget(
                table=target.spec.name,
                name=name,
                columns=tuple(row[2]),
                indexes=tuple((str(n), str(d), c, k) for n, d, c, k in indexes),
                comment=row[1],
            )
        )
    return out


def plan(wh: Conn, specs: Iterable[TableSpec], *, batch_id: int, jobs: int) -> list[Target]:
    """The tables of ``specs`` to load in parallel for ``batch_id`` (a batch ``open_batch`` opened).

    ``specs`` are the tables of the batch in ``initial`` mode; only the
    partitioned version tables qualify, and only while empty (the batch's
    partition, which ``open_batch`` made sure of, is then empty too).
    :func:`parts_for` may still find the source tables too small.
    """
    if jobs < 2:
        return []
    targets = []
    for spec in specs:
        if spec.name not in VERSION_TABLES or not partitions.is_empty(wh, spec.name):
            continue
        targets.append(partitions.target(wh, spec, batch_id))
    return targets


def _source_blocks(src: Conn, spec: TableSpec) -> int:
    row = src.execute(
        "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::bigint",
        (spec.qualified,),
    ).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class Part:
    """One worker's share of a table: blocks [lo, hi) (hi None: to the end)."""

    spec: TableSpec
    index: int
    count: int
    lo: int
    hi: int | None

    def query(self) -> sql.Composable:
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in self.spec.column_names)
        select = sql.SQL("SELECT {} FROM {}").format(
            columns, sql.Identifier(SCHEMA, self.spec.name)
        )
        conditions = []
        if self.lo > 0:
            conditions.append(sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({self.lo},0)")))
        if self.hi is not None:
            conditions.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({self.hi},0)")))
        if not conditions:
            return select
        return sql.SQL("{} WHERE {}").format(select, sql.SQL(" AND ").join(conditions))


def split(spec: TableSpec, blocks: int, parts: int) -> list[Part]:
    """``parts`` block ranges covering the table; the last one is open-ended.

    Open ends matter: the relation size is read once, and a table only grows
    past it with rows the snapshot cannot see, or shrinks (VACUUM truncation).
    """
    parts = max(1, min(parts, blocks // MIN_PART_BLOCKS or 1))
    bounds = [blocks * i // parts for i in range(parts + 1)]
    return [
        Part(spec, i, parts, bounds[i], None if i == parts - 1 else bounds[i + 1])
        for i in range(parts)
    ]


def parts_for(src: Conn, targets: list[Target], *, jobs: int) -> list[Part]:
    """Split the tables by blocks into about ``jobs`` parts, biggest part first.

    None at all when the tables hold fewer than :data:`MIN_PART_BLOCKS` blocks
    together: starting worker processes would cost more than it saves.

    Every table gets one part (so all tables start at once, and a table in
    one part is loaded with COPY FREEZE); the other ``jobs - tables`` parts go
    to the biggest tables in proportion to their size.
    """
    sizes = {target.spec.name: _source_blocks(src, target.spec) for target in targets}
    if sum(sizes.values()) < MIN_PART_BLOCKS:
        log.debug("source tables smaller than %d blocks together: copied serially", MIN_PART_BLOCKS)
        return []
    spare = max(jobs - len(targets), 0) if src.info.server_version >= _TID_RANGE_MIN_VERSION else 0
    total = sum(sizes.values()) or 1
    out: list[Part] = []
    for target in targets:
        blocks = sizes[target.spec.name]
        out.extend(split(target.spec, blocks, 1 + round(spare * blocks / total)))
    return sorted(out, key=lambda p: -((p.hi or sizes[p.spec.name]) - p.lo))


@dataclass
class TableLoad:
    """One table's figures, as the sync records them."""

    rows: int = 0
    bytes: int = 0
    copy_seconds: float = 0.0
    index_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)
    finished: float = 0.0


def create_state_sql(load_table: str, state: str) -> sql.Composed:
    """The load table of a state table: its columns, defaults and NOT NULLs, no index."""
    return sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(
        sql.Identifier(STAGING, load_table), sql.Identifier(STAGING, state)
    )


#: a first batch's latest state from its loaded versions: every live row (a first copy has
#: one version per key), the state's columns only
DERIVE_STATE_SQL = (
    "INSERT INTO {state} ({columns}, _batch_id) "
    "SELECT {columns}, _batch_id FROM {versions} WHERE NOT _deleted"
)


class Loader:
    """The workers of one parallel load.

    :meth:`start`, :meth:`wait`, then :meth:`attach` in the caller's warehouse
    transaction; :meth:`abort` on failure.
    """

    def __init__(
        self,
        *,
        source_url: str,
        warehouse_url: str,
        snapshot: str,
        targets: list[Target],
        parts: list[Part],
        states: list[StateTarget],
        batch_id: int,
        jobs: int,
        application_name: str,
        on_bytes: OnTableBytes,
    ) -> None:
        self.source_url = source_url
        self.warehouse_url = warehouse_url
        self.snapshot = snapshot
        self.targets: dict[str, Target] = {str(t.spec.name): t for t in targets}
        self.parts = parts
        self.batch_id = batch_id
        self.jobs = jobs
        self.application_name = application_name
        self.on_bytes = on_bytes
        self.loads: dict[str, TableLoad] = {name: TableLoad() for name in self.targets}
        #: the state tables derived beside the versions (none: the batch's apply fills them)
        self.states: dict[str, StateTarget] = {state.name: state for state in states}
        self.state_loads: dict[str, TableLoad] = {name: TableLoad() for name in self.states}
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        for part in parts:
            self._pending[part.spec.name] = self._pending.get(part.spec.name, 0) + 1
        self._futures: list[Future[None]] = []
        self._open: set[Conn] = set()
        self._failed = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="acme-mv-copy")
        self._workers: set[subprocess.Popen[bytes]] = set()

    def __contains__(self, table: str) -> bool:
        return table in self.targets

    def load_table(self, table: str) -> sql.Identifier:
        return sql.Identifier(STAGING, load_name(self.batch_id, table))

    # -- sessions ---------------------------------------------------------------

    def _connect(self, url: str, role: Role) -> Conn:
        if self._failed.is_set():
            raise _Stopped()
        conn: Conn = connect(url, role=role, autocommit=True)
        conn.execute("SELECT set_config('application_name', %s, false)", (self.application_name,))
        with self._lock:
            self._open.add(conn)
        return conn

    def _close(self, conn: Conn) -> None:
        with self._lock:
            self._open.discard(conn)
        conn.close()

    # -- the work -----------------------------------------------------------------

    def start(self) -> None:
        """Create the load tables split in parts, then queue every part."""
        multi = {p.spec.name for p in self.parts if p.count > 1}
        if multi:
            wh = self._connect(self.warehouse_url, "warehouse")
            try:
                for name in sorted(multi):
                    wh.execute(self._create_sql(name))
            finally:
                self._close(wh)
        for part in self.parts:
            self._submit(self._copy_part, part)

    def _create_sql(self, table: str) -> sql.Composed:
        target = self.targets[table]
        return create_sql(load_name(self.batch_id, table), table, target.start, target.end)

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        if self._failed.is_set():
            return
        future = self._pool.submit(self._guarded, fn, *args)
        with self._lock:
            self._futures.append(future)

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except _Stopped:
            pass
        except BaseException:
            self._stop()
            raise

    def _stop(self) -> None:
        """First failure: cancel every statement still running, queue nothing more."""
        self._failed.set()
        with self._lock:
            running = list(self._open)
        for conn in running:
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe()
        with self._lock:
            workers = list(self._workers)
        for proc in workers:  # a killed worker's sessions see their sockets close and roll back
            with contextlib.suppress(OSError):
                proc.kill()

    def _load(self, unit: str) -> TableLoad:
        return self.state_loads[unit] if unit in self.states else self.loads[unit]

    def _copy_part(self, part: Part) -> None:
        """Run one part in a worker process (the COPY
        loop holds the GIL once per row); wait for it."""
        table = part.spec.name
        target = self.targets[table]
        job = CopyJob(
            source_url=self.source_url,
            warehouse_url=self.warehouse_url,
            application_name=self.application_name,
            snapshot=self.snapshot,
            batch_id=self.batch_id,
            table=table,
            index=part.index,
            count=part.count,
            lo=part.lo,
            hi=part.hi,
            load_table=load_name(self.batch_id, table),
            create=part.count == 1,
            start=target.start,
            end=target.end,
        )
        t0 = time.monotonic()
        rows, nbytes = self._run_worker(job)
        self._bytes(table, nbytes)
        with self._lock:
            load = self.loads[table]
            load.rows += rows
            load.copy_seconds = max(load.copy_seconds, time.monotonic() - load.started)
            self._pending[table] -= 1
            last = self._pending[table] == 0
        log.debug(
            "%s part %d/%d: %d rows in %.2f s",
            table,
            part.index + 1,
            part.count,
            rows,
            time.monotonic() - t0,
        )
        if last:
            # the state first: its derivation is followed by index builds of its own, the
            # longer chain (the pool runs ``jobs`` sessions at once, in submission order)
            state = f"{table}_state"
            if state in self.states:
                self._submit(self._derive_state, self.states[state])
            self._after_copy(table)

    def _run_worker(self, job: CopyJob) -> tuple[int, int]:
        if self._failed.is_set():
            raise _Stopped()
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, _PARENT_ENV: str(os.getpid())},
        )
        with self._lock:
            self._workers.add(proc)
        try:
            out, err = proc.communicate(json.dumps(asdict(job)).encode())
        finally:
            with self._lock:
                self._workers.discard(proc)
        if proc.returncode != 0:
            if self._failed.is_set():
                raise _Stopped()
            message = err.decode(errors="replace").strip().splitlines()
            raise CopyFailed(
                f"copying {job.table} part {job.index + 1}/{job.count} failed: "
                f"{message[-1] if message else f'exit status {proc.returncode}'}",
                table=job.table,
            )
        rows, nbytes = json.loads(out)
        return int(rows), int(nbytes)

    def _bytes(self, table: str, n: int) -> None:
        with self._lock:
            self.loads[table].bytes += n
        self.on_bytes(table, n)

    def _derive_state(self, state: StateTarget) -> None:
        """Create the state's load table and fill it from the version load table, in one
        transaction (no WAL for it under ``wal_level=minimal``); then queue its indexes."""
        load = self._load(state.name)
        began = time.monotonic()
        wh = self._connect(self.warehouse_url, "warehouse")
        try:
            columns = sql.SQL(", ").join(sql.Identifier(c) for c in state.columns)
            with wh.transaction():
                wh.execute(create_state_sql(load_name(self.batch_id, state.name), state.name))
                rows = wh.execute(
                    sql.SQL(DERIVE_STATE_SQL).format(
                        state=self.load_table(state.name),
                        columns=columns,
                        versions=self.load_table(state.table),
                    )
                ).rowcount
        finally:
            self._close(wh)
        with self._lock:
            load.rows = max(rows, 0)
            load.copy_seconds = time.monotonic() - load.started
        log.debug(
            "staging.%s: %d rows derived in %.2f s", state.name, load.rows, time.monotonic() - began
        )
        self._after_copy(state.name)

    def _indexes(self, unit: str) -> tuple[str, ...]:
        if unit in self.states:
            return tuple(definition for _, definition, _, _ in self.states[unit].indexes)
        return self.targets[unit].indexes

    def _after_copy(self, unit: str) -> None:
        """Queue the index builds and the ANALYZE of a loaded table, each in its own session."""
        indexes = self._indexes(unit)
        with self._lock:
            self._pending[unit] = len(indexes) + 1
        for number, definition in enumerate(indexes):
            self._submit(self._build_index, unit, number, definition)
        self._submit(self._analyze, unit)

    def _build_index(self, table: str, number: int, definition: str) -> None:
        wh = self._connect(self.warehouse_url, "warehouse")
        try:
            wh.execute(
                "SELECT set_config('maintenance_work_mem', %(kb)s || 'kB', false) FROM pg_settings "
                "WHERE name = 'maintenance_work_mem' AND setting::bigint < %(kb)s",
                {"kb": max(copy.INDEX_BUILD_MEMORY_KB // self.jobs, 64 * 1024)},
            )
            name = load_index_name(self.batch_id, table, number)
            wh.execute(retarget_index(definition, name, self.load_table(table)))
        finally:
            self._close(wh)
        self._done_with(table)

    def _analyze(self, table: str) -> None:
        wh = self._connect(self.warehouse_url, "warehouse")
        try:
            wh.execute(sql.SQL("ANALYZE {}").format(self.load_table(table)))
        finally:
            self._close(wh)
        self._done_with(table)

    def _done_with(self, table: str) -> None:
        with self._lock:
            self._pending[table] -= 1
            if self._pending[table] == 0:
                load = self._load(table)
                load.finished = time.monotonic()
                load.index_seconds = load.finished - load.started - load.copy_seconds

    def wait(self) -> None:
        """Wait for every worker; raise the first failure (after the others stopped)."""
        try:
            while True:
                with self._lock:
                    futures = list(self._futures)
                done, pending = wait(futures, return_when=FIRST_EXCEPTION)
                errors = [f.exception() for f in done if f.exception() is not None]
                if errors:
                    self._stop()
                    wait(pending)
                    raise errors[0]  # type: ignore[misc]
                with self._lock:
                    if len(self._futures) == len(futures):
                        break
            for name, load in {**self.loads, **self.state_loads}.items():
                log.debug(
                    "staging.%s: %d rows copied in %.2f s, indexes and ANALYZE done %.2f s later",
                    name,
                    load.rows,
                    load.copy_seconds,
                    load.index_seconds,
                )
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """Stop the workers and drop what they created (best effort; else the next sync does)."""
        self._stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
        try:
            with connect(self.warehouse_url, role="warehouse", autocommit=True) as wh:
                for table in [*self.targets, *self.states]:
                    wh.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.load_table(table)))
        except psycopg.Error as exc:
            log.warning(
                "could not drop the load tables of batch %s (the next sync will): %s",
                self.batch_id,
                exc,
            )

    @property
    def state_rows(self) -> tuple[int, int] | None:
        """(orders, order items) loaded into the state tables; None: the apply fills them."""
        if not self.states:
            return None
        return (
            self.state_loads["orders_state"].rows,
            self.state_loads["order_items_state"].rows,
        )

    def attach(self, wh: Conn) -> None:
        """In the caller's transaction: each load table becomes the batch's partition, and each
        state load table the state table."""
        for target in self.targets.values():
            partitions.attach(wh, target, self.batch_id)
        for state in self.states.values():
            replace_state(wh, state, self.batch_id)


def replace_state(wh: Conn, state: StateTarget, batch_id: int) -> None:
    """Put the state load table in place of the (empty) state table, with its indexes' and
    constraints' names and its comment. ACCESS EXCLUSIVE on the old table until the commit."""
    table = sql.Identifier(STAGING, state.name)
    if not partitions.is_empty(wh, state.name):
        raise CopyFailed(
            f"staging.{state.name} got rows during the parallel load; run the sync again",
            table=state.table,
        )
    wh.execute(sql.SQL("DROP TABLE {}").format(table))
    wh.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            sql.Identifier(STAGING, load_name(batch_id, state.name)), sql.Identifier(state.name)
        )
    )
    for number, (name, _, constraint, kind) in enumerate(state.indexes):
        built = sql.Identifier(STAGING, load_index_name(batch_id, state.name, number))
        if constraint is None:
            wh.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(built, sql.Identifier(name)))
            continue
        # the index becomes the constraint's (and takes its name): no second build
        wh.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} USING INDEX {}").format(
                table,
                sql.Identifier(constraint),
                sql.SQL("PRIMARY KEY" if kind == "p" else "UNIQUE"),
                sql.Identifier(load_index_name(batch_id, state.name, number)),
            )
        )
        if constraint != name:
            wh.execute(
                sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(STAGING, constraint), sql.Identifier(name)
                )
            )
    if state.comment is not None:
        wh.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(table, sql.Literal(state.comment)))


@dataclass(frozen=True, kw_only=True)
class CopyJob:
    """What a worker process needs to copy one part; sent as JSON on its stdin (never argv)."""

    source_url: str
    warehouse_url: str
    application_name: str
    snapshot: str
    batch_id: int
    table: str
    index: int
    count: int
    lo: int
    hi: int | None
    load_table: str
    #: the part is the whole table: create the load table in the COPY's transaction (COPY FREEZE)
    create: bool
    #: the batch's partition range (the load table's CHECK)
    start: int
    end: int

    @property
    def part(self) -> Part:
        return Part(TABLES[self.table], self.index, self.count, self.lo, self.hi)


def copy_part(job: CopyJob) -> tuple[int, int]:
    """Copy ``job.part`` in the exported snapshot;
    return (rows, bytes). Runs in a worker process."""
    part = job.part
    nbytes = 0

    def count(n: int) -> None:
        nonlocal nbytes
        nbytes += n

    with (
        connect(job.source_url, role="source", autocommit=True) as src,
        connect(job.warehouse_url, role="warehouse", autocommit=True) as wh,
    ):
        for conn in (src, wh):
            conn.execute(
                "SELECT set_config('application_name', %s, false)", (job.application_name,)
            )
        src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        src.read_only = True
        src.autocommit = False
        # the first statement after psycopg's BEGIN, as SET TRANSACTION SNAPSHOT requires
        src.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(job.snapshot)))
        src.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(
                sql.Identifier(SCHEMA, part.spec.name)
            )
        )
        wh.execute("SELECT set_config('acme_mv.batch_id', %s, false)", (str(job.batch_id),))
        load = sql.Identifier(STAGING, job.load_table)
        with wh.transaction():
            if job.create:  # created in this transaction: COPY FREEZE writes the rows frozen
                wh.execute(create_sql(job.load_table, job.table, job.start, job.end))
            rows = copy.stream(
                src, part.query(), wh, copy._target(load, part.spec), count, freeze=job.create
            )
        src.rollback()
    return rows, nbytes


#: how a worker process is started: a fresh interpreter (no fork of the sync's
#: sessions and threads, no re-import of the caller's __main__ as multiprocessing's spawn does)
_WORKER_CODE = "from acme_mv.staging.parallel import worker_main; worker_main()"


def worker_main() -> None:
    """Entry point of a worker process: a CopyJob as JSON on stdin, ``[rows, bytes]`` on stdout.

    On Linux it asks for SIGKILL when its parent dies (a killed sync leaves no
    worker behind); a failure is one line on stderr and exit status 1.
    """
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = int(os.environ.get(_PARENT_ENV, "0"))
    if parent and os.getppid() != parent:  # the sync died before prctl took effect
        os._exit(1)
    job = CopyJob(**json.loads(sys.stdin.read()))
    try:
        rows, nbytes = copy_part(job)
    except (psycopg.Error, AcmeMvError) as exc:
        sys.stderr.write(f"{type(exc).__name__}: {first_line(exc)}\n")
        sys.exit(1)
    sys.stdout.write(json.dumps([rows, nbytes]))


class _Stopped(Exception):
    """A worker found the load stopped before it began."""


def start(
    *,
    src: Conn,
    wh: Conn,
    source_url: str,
    warehouse_url: str,
    snapshot: str,
    specs: Iterable[TableSpec],
    batch_id: int,
    jobs: int,
    application_name: str,
    on_bytes: OnTableBytes,
    with_state: bool = True,
) -> Loader | None:
    """Plan and start the parallel load of ``specs`` (None: copy them serially).

    ``with_state``: also derive the latest-state tables when :func:`plan_state`
    allows (:meth:`acme_mv.staging.batch.Batch.parallel` records :attr:`Loader.state_rows`).

    ``src`` is in the transaction whose snapshot ``snapshot`` names; ``wh`` in
    the batch's transaction, inside :func:`acme_mv.staging.batch.open_batch`.
    """
    targets = plan(wh, specs, batch_id=batch_id, jobs=jobs)
    if not targets:
        return None
    states = plan_state(wh, targets) if with_state else []
    parts = parts_for(src, targets, jobs=jobs)
    if not parts:
        return None
    loader = Loader(
        source_url=source_url,
        warehouse_url=warehouse_url,
        snapshot=snapshot,
        targets=targets,
        parts=parts,
        states=states,
        batch_id=batch_id,
        jobs=jobs,
        application_name=application_name,
        on_bytes=on_bytes,
    )
    try:
        loader.start()
    except BaseException:
        loader.abort()
        raise
    return loader
