"""Where the CPU goes during a benchmark: seconds per process group, per change.

A snapshot reads the user + system CPU time of the benchmark's own children
(the writers, the ``acme-mv`` loop) and of every process of the PostgreSQL
server (found as the children of the postmaster whose pid is given), grouped
by what each does: a backend by its database (its process title says
``postgres: USER DATABASE ...``), a walsender, and the server's background
processes. The difference of two snapshots is the CPU each group spent in
between; the box's total (all processes, every engineer's) is beside it, so
what others used shows too. Processes that ended in between (autovacuum
workers) are not counted.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import psutil


def postmaster_pid(data_dir: str) -> int:
    """The server's pid, from the first line of ``postmaster.pid`` in its data directory."""
    with open(os.path.join(data_dir, "postmaster.pid")) as fh:
        return int(fh.readline().strip())


def _group(proc: psutil.Process) -> str:
    title = " ".join(proc.cmdline()) or proc.name()
    if not title.startswith("postgres:"):
        return "server"
    words = title.split()
    if len(words) > 1 and words[1] == "walsender":
        return "walsender"
    if len(words) > 2 and words[1] not in {
        "checkpointer",
        "background",
        "walwriter",
        "autovacuum",
        "logical",
        "io",
        "archiver",
        "logger",
        "startup",
        "stats",
    }:
        return f"backend {words[2]}"
    return "server background"


@dataclass
class Snapshot:
    """CPU seconds per pid (with its group), and of the whole box."""

    per_pid: dict[int, tuple[str, float]] = field(default_factory=dict)
    box: float = 0.0
    wall: float = 0.0


def snapshot(named: Mapping[str, list[int]], postmaster: int | None) -> Snapshot:
    """``named``: group name -> pids of our own processes (threads included)."""
    import time

    snap = Snapshot(wall=time.monotonic())
    total = psutil.cpu_times()
    snap.box = total.user + total.system + getattr(total, "nice", 0.0)
    procs: list[tuple[str, psutil.Process]] = []
    for name, pids in named.items():
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                procs.append((name, psutil.Process(pid)))
    if postmaster is not None:
        try:
            for child in psutil.Process(postmaster).children():
                if any(child.pid in pids for pids in named.values()):
                    continue  # a backend named by the caller (the SQL writer's sessions)
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    procs.append((_group(child), child))
        except psutil.NoSuchProcess:
            pass
    for name, proc in procs:
        try:
            t = proc.cpu_times()
            snap.per_pid[proc.pid] = (name, t.user + t.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return snap


def spent(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds per group between two snapshots, plus ``box`` (all processes),
    ``ours`` (the groups' sum), ``wall`` and ``cores`` (psutil's count)."""
    out: dict[str, float] = {}
    for pid, (name, seconds) in after.per_pid.items():
        start = before.per_pid.get(pid, (name, 0.0))[1]
        out[name] = out.get(name, 0.0) + max(0.0, seconds - start)
    ours = sum(out.values())
    return {
        **dict(sorted(out.items(), key=lambda kv: -kv[1])),
        "ours": ours,
        "box": after.box - before.box,
        "wall": after.wall - before.wall,
        "cores": float(psutil.cpu_count() or 1),
    }


def process_tree_and_box() -> tuple[float, float]:
    """CPU seconds so far of this process with its waited-for children (the sync's worker
    processes, psql), and of the whole box (the server's backends are the rest on a quiet box:
    a backend that has exited is in no snapshot, but it is in the box's total)."""
    import resource

    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        own += usage.ru_utime + usage.ru_stime
    total = psutil.cpu_times()
    return own, total.user + total.system + getattr(total, "nice", 0.0)
