"""(7) Export: each report of the registry, latency over rounds (CSV to a file)."""

from __future__ import annotations

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
    return found
