"""(7) Export: each report of the registry, latency over rounds (CSV to a file); and the
command line's start-up: ``acme-mv --help`` and ``acme-mv export open_orders --output -``,
each a new process, wall clock (what a user or a cron job waits)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from acme_mv.reports import export as export_api
from acme_mv.reports import registry
from benchmarks.acme_sync import reports_ready
from benchmarks.core import Bench, Result, guarded, rounds

NAME = "export"
#: exports are fast; more rounds give a steadier median at no real cost
MIN_ROUNDS = 10


def measure(bench: Bench) -> list[Result]:
    with guarded(bench, "export", "acme-mv export") as found:
        reports_ready(bench)
        with tempfile.TemporaryDirectory(prefix="acme-bench-export-") as tmp:
            for report in (r.name for r in registry.reports()):
                target = Path(tmp) / f"{report}.csv"
                result = Result(f"export.{report}", f"acme-mv export {report}")

                def once(report: str = report, target: Path = target) -> None:
                    export_api.export(
                        bench.settings,
                        report,
                        output=target,
                        output_dir=None,
                        fmt="csv",
                        limit=None,
                        force=True,
                    )

                rounds(bench, result, once, count=max(bench.rounds, MIN_ROUNDS))
                result.rows = max(0, sum(1 for _ in target.open()) - 1)  # minus the header
                found.append(result)
    with guarded(bench, "startup", "acme-mv start-up") as found:
        found.extend(startup(bench))
    return found


#: the commands whose start-up is measured, as a user types them
STARTUP = {
    "startup.help": ["--help"],
    "startup.export": ["export", "open_orders", "--output", "-"],
}


def startup(bench: Bench) -> list[Result]:
    """Each command in a new interpreter (``python -m acme_mv``), stdout discarded."""
    env = {**os.environ, "ACME_MV_DATABASE_URL": bench.settings.database_url}
    found = []
    for name, args in STARTUP.items():
        result = Result(name, "acme-mv " + " ".join(args), throughput=False)

        def once(args: list[str] = args) -> None:
            cmd = [sys.executable, "-m", "acme_mv", *args]
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)

        found.append(rounds(bench, result, once, count=max(bench.rounds, MIN_ROUNDS)))
    return found
