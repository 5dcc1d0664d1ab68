"""The slot's life: ``setup`` (publication, slot,
initial copy in its snapshot), ``status``, ``drop``.

Setup creates the slot with ``CREATE_REPLICATION_SLOT ... (SNAPSHOT 'export')``
on a replication connection: the server answers with the slot's
``consistent_point`` LSN and the name of a snapshot that sees exactly the
transactions committed before it. While that connection stays open and idle,
a REPEATABLE READ transaction on an ordinary connection adopts the snapshot
(``SET TRANSACTION SNAPSHOT``) and the initial copy of the four tables runs
in it, through the staging core (:mod:`acme_mv.staging`), as ONE batch of
:func:`acme_mv.staging.batch.open_batch`; the rows, batch 1 and the
consistent point are committed in ONE warehouse transaction. The stream then
starts at the consistent point: every transaction is either in the copy or
in the stream, never both, never neither.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row, scalar_row

from acme_mv import revision
from acme_mv.cdc import replication
from acme_mv.cdc.errors import NotSetUp, SlotAtRisk, SlotBusy, SlotLost, SourceNotReady
from acme_mv.cdc.pgoutput import lsn_from_str
from acme_mv.config import Settings
from acme_mv.db import Conn, connection, one_value
from acme_mv.defaults import DEFAULT_MAX_RETAINED as DEFAULT_MAX_RETAINED
from acme_mv.defaults import DEFAULT_PUBLICATION as DEFAULT_PUBLICATION
from acme_mv.defaults import DEFAULT_SLOT as DEFAULT_SLOT
from acme_mv.errors import BadArgument
from acme_mv.staging import copy, parallel, tables
from acme_mv.staging.batch import open_batch
from acme_mv.staging.tables import SCHEMA, TABLES

log = logging.getLogger(__name__)

#: failover slots (``FAILOVER``) exist from PostgreSQL 17 on
FAILOVER_MIN_VERSION = 170000

#: how long ``drop`` waits for a slot's walsender to go away (a streamer just stopped)
DROP_WAIT_S = 10.0


@dataclass(frozen=True, kw_only=True)
class SetupResult:
    slot: str
    publication: str
    #: False: everything was already in place, nothing done
    created: bool
    consistent_lsn: str
    batch_id: int | None
    #: rows read from the source per table by the initial copy
    rows: dict[str, int]
    seconds: float


@dataclass(frozen=True, kw_only=True)
class SavedPosition:
    slot: str
    publication: str
    lsn: str
    last_commit_at: dt.datetime | None
    caught_up_at: dt.datetime | None
    last_batch_id: int | None
    #: table -> LSN (text) of the snapshot ``cdc resync`` re-copied it in
    resync: dict[str, str]


def saved_position(wh: Conn, slot: str) -> SavedPosition | None:
    return (
        wh.cursor(row_factory=class_row(SavedPosition))
        .execute(
            "SELECT slot_name AS slot, publication, "
            "lsn::text AS lsn, last_commit_at, caught_up_at, "
            "last_batch_id, resync FROM staging.cdc_state WHERE slot_name = %s",
            (slot,),
        )
        .fetchone()
    )


def slots(settings: Settings) -> list[str]:
    """The slots the warehouse holds a position for (change capture set up), by name."""
    with connection(settings.database_url, role="warehouse", autocommit=True) as wh:
        revision.require_head(wh)
        return list(
            wh.cursor(row_factory=scalar_row)
            .execute("SELECT slot_name FROM staging.cdc_state ORDER BY slot_name")
            .fetchall()
        )


@dataclass(frozen=True)
class _SlotRow:
    active_pid: int | None
    wal_status: str | None
    confirmed_flush_lsn: str | None
    restart_lsn: str | None
    database: str | None


def _slot_row(src: Conn, slot: str) -> _SlotRow | None:
    return (
        src.cursor(row_factory=class_row(_SlotRow))
        .execute(
            "SELECT active_pid, wal_status, confirmed_flush_lsn::text AS confirmed_flush_lsn, "
            "restart_lsn::text AS restart_lsn, database "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )
        .fetchone()
    )


@dataclass(frozen=True)
class SlotHolder:
    """The source session streaming from a slot (``pg_stat_activity`` of its ``active_pid``;
    ``client_addr`` and ``backend_start`` are NULL for a local socket, or for another role's
    session without pg_read_all_stats)."""

    pid: int
    application_name: str | None
    client_addr: str | None
    backend_start: dt.datetime | None

    def describe(self) -> str:
        client = self.client_addr or "a local socket (or not visible to this role)"
        since = self.backend_start.isoformat(timespec="seconds") if self.backend_start else "?"
        return (
            f"the source process {self.pid} "
            f"(application_name {self.application_name or ''!r}, client {client}, since {since})"
        )


_HOLDER_SQL = """
SELECT s.active_pid AS pid, a.application_name, host(a.client_addr) AS client_addr,
       a.backend_start
FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
WHERE s.slot_name = %s AND s.active_pid IS NOT NULL
"""


def slot_holder(src: Conn, slot: str) -> str:
    """Who streams from ``slot`` now, in words (for the log line of a streamer that waits)."""
    found = src.cursor(row_factory=class_row(SlotHolder)).execute(_HOLDER_SQL, (slot,)).fetchone()
    return found.describe() if found else "a source process that has just let it go"


def require_logical(src: Conn) -> None:
    level = one_value(src, "SELECT current_setting('wal_level')", kind=str)
    if level != "logical":
        raise SourceNotReady(
            f"The source's wal_level is {level}; change capture needs wal_level = logical "
            "(ALTER SYSTEM SET wal_level = logical, then restart the source server)",
            requirement="wal_level",
        )


def check_slot(src: Conn, slot: str) -> _SlotRow:
    """The slot's row, or :class:`NotSetUp` (missing) / :class:`SlotLost` (invalidated)."""
    found = _slot_row(src, slot)
    if found is None:
        raise NotSetUp(
            f"The source has no replication slot {slot!r}: run acme-mv cdc setup "
            "(after acme-mv cdc drop if the warehouse still holds a position for it)",
            slot=slot,
        )
    if found.wal_status == "lost":
        raise SlotLost(
            f"The replication slot {slot!r} was invalidated "
            "by the source (wal_status lost: it removed WAL "
            "the slot still needed, max_slot_wal_keep_size); "
            "re-snapshot with acme-mv cdc drop, then "
            "acme-mv cdc setup",
            slot=slot,
        )
    return found


def require_failover(src: Conn) -> None:
    """A failover slot needs PostgreSQL 17 or later: :class:`BadArgument` (a usage error)."""
    version = src.info.server_version
    if version < FAILOVER_MIN_VERSION:
        raise BadArgument(
            f"--failover needs PostgreSQL 17 or later on the source, which runs "
            f"{version // 10000}; drop --failover (a standby then has no copy of the slot: "
            "after a failover, acme-mv cdc drop, then acme-mv cdc setup on the new primary)"
        )


def warn_unbounded_wal(src: Conn) -> None:
    """One WARNING line when the source may keep WAL for a stopped slot without bound."""
    keep = one_value(src, "SELECT current_setting('max_slot_wal_keep_size')", kind=str)
    if keep.strip() == "-1":
        log.warning(
            "the source's max_slot_wal_keep_size is -1 (unlimited): a stopped acme-mv cdc run "
            "makes the source keep WAL until its disk is full; set a bound on the source, e.g. "
            "ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'; SELECT pg_reload_conf();"
        )


def _make_failover(settings: Settings, src: Conn, slot: str) -> None:
    """Turn an existing slot into a failover slot (a no-op when it is one)."""
    if one_value(
        src, "SELECT failover FROM pg_replication_slots WHERE slot_name = %s", (slot,), kind=bool
    ):
        return
    repl = replication.connect(settings.effective_source_url)
    try:
        name = psycopg.sql.Identifier(slot).as_string(None)
        repl.cursor().execute(f"ALTER_REPLICATION_SLOT {name} (FAILOVER true)")
    except replication.errors() as exc:
        raise SourceNotReady(
            f"Cannot make the replication slot {slot!r} a failover slot: "
            f"{replication.describe(exc)} (stop acme-mv cdc run first)",
            requirement="slot",
        ) from None
    finally:
        repl.close()
    log.info("replication slot %s is now a failover slot", slot)


_PUBLISHED_SQL = """
SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s
"""


def _ensure_publication(src: Conn, publication: str) -> bool:
    """Create the publication of the four tables, or check the existing one; True when created."""
    wanted = {spec.qualified for spec in TABLES.values()}
    exists = one_value(
        src,
        "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = %s)",
        (publication,),
        kind=bool,
    )
    if exists:
        published = set(
            src.cursor(row_factory=scalar_row).execute(_PUBLISHED_SQL, (publication,)).fetchall()
        )
        missing = sorted(wanted - published)
        if missing:
            raise SourceNotReady(
                f"The publication {publication!r} does not publish {', '.join(missing)}; "
                f"ALTER PUBLICATION {publication} ADD TABLE "
                f"{', '.join(missing)} (as the tables' owner)",
                requirement="publication",
            )
        return False
    tables = sql.SQL(", ").join(sql.Identifier(SCHEMA, name) for name in TABLES)
    statement = sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
        sql.Identifier(publication), tables
    )
    try:
        src.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        raise SourceNotReady(
            "This source role may not create the publication "
            f"{publication!r} (it needs CREATE on the "
            f"database and ownership of the tables); ask the tables' owner to run: "
            f"{statement.as_string(src)}",
            requirement="publication",
        ) from None
    log.info("created publication %s", publication)
    return True


def _drop_slot(src: Conn, slot: str, *, wait_s: float = DROP_WAIT_S) -> bool:
    """Drop the slot when it exists; wait a little for a walsender that is going away."""
    deadline = time.monotonic() + wait_s
    while True:
        found = _slot_row(src, slot)
        if found is None:
            return False
        if found.active_pid is None:
            try:
                src.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                return True
            except psycopg.errors.ObjectInUse:
                pass  # became active in between: wait like below
            except psycopg.errors.UndefinedObject:
                return False
        if time.monotonic() >= deadline:
            raise SlotBusy(
                f"The replication slot {slot!r} is in use by the source process {found.active_pid} "
                "(a running acme-mv cdc run?); stop it first",
                slot=slot,
                pid=found.active_pid,
            )
        time.sleep(0.1)


def setup(
    settings: Settings,
    *,
    slot: str = DEFAULT_SLOT,
    publication: str = DEFAULT_PUBLICATION,
    jobs: int = parallel.DEFAULT_JOBS,
    failover: bool = False,
) -> SetupResult:
    """Publication + slot + initial copy in the slot's snapshot (see the module doc).

    ``failover``: the slot is a failover slot (PostgreSQL 17+; :class:`BadArgument` on older
    servers), which a standby with ``sync_replication_slots`` keeps in step, so change
    capture goes on from a promoted standby. An existing slot is made one
    (``ALTER_REPLICATION_SLOT``). Warns when the source's ``max_slot_wal_keep_size`` is -1.

    ``jobs > 1``: orders and order_items, when staging holds none, are copied by
    parallel workers that import the slot's snapshot (:mod:`acme_mv.staging.parallel`).

    Already set up (the warehouse holds a position for ``slot`` and the slot
    exists): nothing is done, ``created`` is False. A slot the warehouse knows
    nothing about (a setup killed before its commit) is dropped and re-created.
    """
    began = time.monotonic()
    specs = list(TABLES.values())
    with (
        connection(settings.database_url, role="warehouse") as wh,
        connection(settings.effective_source_url, role="source", autocommit=True) as admin,
    ):
        revision.require_head(wh)
        require_logical(admin)
        if failover:
            require_failover(admin)
        warn_unbounded_wal(admin)
        tables.check_schema(admin, specs, warn_unindexed=False)  # reads each table once, whole
        saved = saved_position(wh, slot)
        wh.rollback()
        existing = _slot_row(admin, slot)
        if saved is not None:
            if existing is None:
                raise NotSetUp(
                    "The warehouse holds a position for slot "
                    f"{slot!r} but the source has no such slot; "
                    "start over with acme-mv cdc drop, then acme-mv cdc setup",
                    slot=slot,
                )
            check_slot(admin, slot)
            if failover:
                _make_failover(settings, admin, slot)
            return SetupResult(
                slot=slot,
                publication=saved.publication,
                created=False,
                consistent_lsn=saved.lsn,
                batch_id=None,
                rows={},
                seconds=time.monotonic() - began,
            )
        if existing is not None:
            log.warning(
                "replication slot %s exists but the warehouse "
                "has no position for it: re-creating it",
                slot,
            )
            _drop_slot(admin, slot)
        _ensure_publication(admin, publication)
        repl = replication.connect(settings.effective_source_url)
        try:
            consistent, snapshot = create_slot(
                repl, slot, admin.info.server_version, failover=failover
            )
            with connection(settings.effective_source_url, role="source") as src:
                src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                src.read_only = True
                src.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
                batch_id, rows = _initial_copy(
                    src,
                    wh,
                    specs,
                    slot=slot,
                    publication=publication,
                    lsn=consistent,
                    parallel_load=_ParallelLoad(settings=settings, snapshot=snapshot, jobs=jobs),
                )
                src.rollback()
            wh.commit()
        except BaseException:
            wh.rollback()
            repl.close()
            _drop_slot(admin, slot)
            raise
        repl.close()  # the exported snapshot ends here, after the warehouse commit
    log.info("change capture set up: slot %s at %s, batch %d", slot, consistent, batch_id)
    return SetupResult(
        slot=slot,
        publication=publication,
        created=True,
        consistent_lsn=consistent,
        batch_id=batch_id,
        rows=rows,
        seconds=time.monotonic() - began,
    )


def create_slot(
    repl: Any, slot: str, server_version: int, *, failover: bool = False, temporary: bool = False
) -> tuple[str, str]:
    """(consistent_point, snapshot name) of a new pgoutput slot with an exported snapshot
    (``temporary``: dropped when ``repl`` closes)."""
    cur = repl.cursor()
    if server_version >= 150000:
        options = "(SNAPSHOT 'export', FAILOVER true)" if failover else "(SNAPSHOT 'export')"
    else:
        options = "EXPORT_SNAPSHOT"
    name = psycopg.sql.Identifier(slot).as_string(None)
    try:
        kind = "TEMPORARY LOGICAL" if temporary else "LOGICAL"
        cur.execute(f"CREATE_REPLICATION_SLOT {name} {kind} pgoutput {options}")
    except replication.errors() as exc:
        raise SourceNotReady(
            f"Cannot create the replication slot {slot!r}: {str(exc).strip().splitlines()[0]}",
            requirement="slot",
        ) from None
    _, consistent, snapshot, _ = cur.fetchone()
    return str(consistent), str(snapshot)


@dataclass(frozen=True, kw_only=True)
class _ParallelLoad:
    """What the parallel first copy needs: where to connect, the slot's snapshot, how many jobs."""

    settings: Settings
    snapshot: str
    jobs: int


def _initial_copy(
    src: Conn,
    wh: Conn,
    specs: list[tables.TableSpec],
    *,
    slot: str,
    publication: str,
    lsn: str,
    parallel_load: _ParallelLoad | None = None,
) -> tuple[int, dict[str, int]]:
    """Every table read in the snapshot into staging as ONE batch, with the slot's position.

    Each table lands as ``sync --full`` would land it (:func:`acme_mv.staging.copy.mode_of`):
    a mirror reloaded, an empty table copied whole, a staged one (a re-snapshot over earlier
    staging) compared whole: versions and tombstones, never a truncate.
    """
    rows: dict[str, int] = {}

    def ignore(_: int) -> None:
        pass

    with open_batch(wh, tables=[s.name for s in specs]) as batch:
        modes: dict[str, copy.Mode] = {
            spec.name: copy.mode_of(wh, spec, full=True) for spec in specs
        }
        loader = None
        if parallel_load is not None:
            loader = parallel.start(
                src=src,
                wh=wh,
                source_url=parallel_load.settings.effective_source_url,
                warehouse_url=parallel_load.settings.database_url,
                snapshot=parallel_load.snapshot,
                specs=[s for s in specs if modes[s.name] == "initial"],
                batch_id=batch.batch_id,
                jobs=parallel_load.jobs,
                application_name=replication.APPLICATION_NAME,
                on_bytes=lambda table, n: None,
            )
        with batch.parallel(loader):
            for spec in specs:
                if loader is not None and spec.name in loader:
                    continue
                query = tables.select_all(spec)
                rows[spec.name], _, _ = copy.load(src, query, wh, spec, modes[spec.name], ignore)
                log.info("initial copy: %s, %d rows", spec.name, rows[spec.name])
        for name, load in loader.loads.items() if loader is not None else ():
            rows[name] = load.rows
            log.info("initial copy: %s, %d rows (in parallel)", name, load.rows)
        wh.execute(
            "INSERT INTO staging.cdc_state "
            "(slot_name, publication, lsn, last_batch_id, caught_up_at) "
            "VALUES (%s, %s, %s::pg_lsn, %s, clock_timestamp())",
            (slot, publication, lsn, batch.batch_id),
        )
    return batch.batch_id, {spec.name: rows[spec.name] for spec in specs}


@dataclass(frozen=True, kw_only=True)
class Status:
    """Where change capture stands; ``acme-mv cdc status`` prints it."""

    slot: str
    publication: str | None
    #: the slot exists on the source
    exists: bool
    active_pid: int | None
    #: reserved / extended / unreserved / lost (pg_replication_slots.wal_status)
    wal_status: str | None
    current_lsn: str
    confirmed_flush_lsn: str | None
    restart_lsn: str | None
    #: source WAL not yet confirmed by the slot (pg_current_wal_lsn() - confirmed_flush_lsn)
    lag_bytes: int | None
    #: source WAL the slot keeps from being removed (pg_current_wal_lsn() - restart_lsn)
    retained_bytes: int | None
    #: the warehouse's position (every transaction ending at or before it is in staging)
    saved_lsn: str | None
    last_batch_id: int | None
    last_commit_at: dt.datetime | None
    caught_up_at: dt.datetime | None
    #: seconds since the newest moment staging is known complete up to: the last
    #: applied commit's source time, or the last heartbeat when that is later
    lag_s: float | None

    def as_json(self) -> dict[str, object]:
        return {
            k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in asdict(self).items()
        }


_STATUS_SQL = """
SELECT pg_current_wal_lsn()::text,
       s.active_pid, s.wal_status, s.confirmed_flush_lsn::text, s.restart_lsn::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint,
       s.slot_name IS NOT NULL
FROM (SELECT 1) one
LEFT JOIN pg_replication_slots s ON s.slot_name = %s
"""


def status(settings: Settings, *, slot: str = DEFAULT_SLOT) -> Status:
    """The slot's lag (bytes and seconds), WAL retained, positions, wal_status."""
    with connection(settings.database_url, role="warehouse") as wh:
        revision.require_head(wh)
        saved = saved_position(wh, slot)
        now = one_value(wh, "SELECT clock_timestamp()", kind=dt.datetime)
    with connection(settings.effective_source_url, role="source", autocommit=True) as src:
        found = src.execute(_STATUS_SQL, (slot,)).fetchone()
        assert found is not None
    current, pid, wal_status, confirmed, restart, lag_bytes, retained, exists = found
    newest = (
        [t for t in (saved.last_commit_at, saved.caught_up_at) if t is not None] if saved else []
    )
    return Status(
        slot=slot,
        publication=saved.publication if saved else None,
        exists=bool(exists),
        active_pid=pid,
        wal_status=wal_status,
        current_lsn=str(current),
        confirmed_flush_lsn=confirmed,
        restart_lsn=restart,
        lag_bytes=None if lag_bytes is None else int(lag_bytes),
        retained_bytes=None if retained is None else int(retained),
        saved_lsn=saved.lsn if saved else None,
        last_batch_id=saved.last_batch_id if saved else None,
        last_commit_at=saved.last_commit_at if saved else None,
        caught_up_at=saved.caught_up_at if saved else None,
        lag_s=max((now - max(newest)).total_seconds(), 0.0) if newest else None,
    )


def check_health(st: Status, *, max_retained: int = DEFAULT_MAX_RETAINED) -> None:
    """:class:`SlotAtRisk` (exit 5) when the slot is invalidated or about to be (``wal_status``
    lost or unreserved), or retains more than ``max_retained`` bytes of source WAL; each
    message names the command that recovers."""
    where = f"The replication slot {st.slot!r}"
    if st.wal_status == "lost":
        message = (
            f"{where} was invalidated by the source (wal_status lost); "
            "re-snapshot with acme-mv cdc drop, then acme-mv cdc setup"
        )
    elif st.wal_status == "unreserved":
        message = (
            f"{where} is about to be invalidated (wal_status unreserved: it needs WAL "
            "beyond the source's max_slot_wal_keep_size); start acme-mv cdc run (or "
            "acme-mv run --cdc) now so it catches up, or raise max_slot_wal_keep_size"
        )
    elif st.retained_bytes is not None and st.retained_bytes > max_retained:
        message = (
            f"{where} retains {st.retained_bytes:,} bytes of source WAL, more than the limit "
            f"{max_retained:,} (--max-retained); start acme-mv cdc run (or acme-mv run --cdc) "
            "so it catches up, or acme-mv cdc drop if change capture is no longer used"
        )
    else:
        return
    raise SlotAtRisk(
        message, slot=st.slot, wal_status=st.wal_status, retained_bytes=st.retained_bytes
    )


@dataclass(frozen=True, kw_only=True)
class DropResult:
    slot_dropped: bool
    publication_dropped: bool
    #: the publication exists but belongs to another role: kept
    publication_kept: bool
    position_deleted: bool


def drop(
    settings: Settings, *, slot: str = DEFAULT_SLOT, publication: str | None = None
) -> DropResult:
    """Drop the slot and the publication on the source, and the warehouse's position."""
    with connection(settings.database_url, role="warehouse") as wh:
        revision.require_head(wh)
        saved = saved_position(wh, slot)
        pub = publication or (saved.publication if saved else DEFAULT_PUBLICATION)
        with connection(settings.effective_source_url, role="source", autocommit=True) as src:
            slot_dropped = _drop_slot(src, slot)
            pub_dropped = kept = False
            if src.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (pub,)).fetchone():
                try:
                    src.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(pub)))
                    pub_dropped = True
                except psycopg.errors.InsufficientPrivilege:
                    kept = True
                    log.warning("publication %s kept: it belongs to another role", pub)
        deleted = wh.execute("DELETE FROM staging.cdc_state WHERE slot_name = %s", (slot,)).rowcount
        wh.commit()
    return DropResult(
        slot_dropped=slot_dropped,
        publication_dropped=pub_dropped,
        publication_kept=kept,
        position_deleted=deleted > 0,
    )


def lsn_int(text: str) -> int:
    return lsn_from_str(text)
