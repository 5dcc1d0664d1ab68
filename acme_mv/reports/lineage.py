"""The lineage of every report, from the registry and the views' dependency order.

Rendered as Markdown into docs/extending.md by cog (``make docs``;
``cog --check`` and ``tests/test_docs_views.py`` fail when it is stale).
"""

from __future__ import annotations

from dataclasses import dataclass

from acme_mv import sqlfiles
from acme_mv.reports import registry, views

#: the folders of views/, in pipeline order
LAYERS = ("state", "deltas", "summaries", "reports")


@dataclass(frozen=True, kw_only=True)
class Step:
    """One step of a report's lineage: an object and the file that defines or writes it."""

    layer: str
    obj: str
    file: str


def steps(report: registry.Report) -> list[Step]:
    """source table -> state -> delta -> summary -> union view -> ... -> the report's view."""
    summary = next(s for s in registry.summaries() if s.name == report.summary)
    found: list[Step] = []
    for state in summary.state_tables:
        table = state.removeprefix("staging.").removesuffix("_state")
        found.append(
            Step(layer="source", obj=f"operations.{table}", file="acme_mv/staging/copy.py")
        )
    for state in summary.state_tables:
        table = state.removeprefix("staging.")
        found.append(Step(layer="state", obj=state, file=f"views/state/{table}.upsert.sql"))
    found.append(
        Step(
            layer="delta",
            obj=f"{registry.SCHEMA}.{summary.name}_delta",
            file=f"views/deltas/{summary.name}.sql",
        )
    )
    found.append(
        Step(
            layer="summary",
            obj=f"{registry.SCHEMA}.{summary.name}_{{historic,current}}",
            file=summary.file,
        )
    )
    all_views = list(registry.report_views())
    union = next(v for v in all_views if v.qualified == summary.view)
    chain = [union, *views.dependants_of(union, all_views)]
    # keep the views on the way to the report's own view (the dependants read one another)
    wanted = {report.view.qualified} | {
        v.qualified for v in chain if report.view == v or _leads_to(v, report.view, chain)
    }
    for v in chain:
        if v.qualified in wanted:
            layer = "top-N" if v == report.view and report.ranked else "view"
            found.append(
                Step(layer=layer, obj=v.qualified, file=f"views/reports/{v.qualified}.sql")
            )
    return found


def _leads_to(start: views.View, goal: views.View, chain: list[views.View]) -> bool:
    if goal.references(start):
        return True
    return any(v.references(start) and _leads_to(v, goal, chain) for v in chain if v != start)


def _cell(step: Step) -> str:
    if step.layer == "source":
        return f"`{step.obj}`"
    return f"`{step.obj}`<br>`{step.file}`"


def markdown() -> str:
    """The lineage table and the index of every SQL file, as Markdown."""
    out = [
        "| report | counts | source | state | delta (per batch) | summary (from scratch) "
        "| views the readers query (union view first) |",
        "|---|---|---|---|---|---|---|",
    ]
    counts = {s.name: s.counts for s in registry.summaries()}
    for report in registry.reports():
        by_layer: dict[str, list[Step]] = {}
        for step in steps(report):
            by_layer.setdefault("view" if step.layer == "top-N" else step.layer, []).append(step)
        cells = [
            "<br>".join(_cell(s) for s in by_layer.get(layer, []))
            for layer in ("source", "state", "delta", "summary")
        ]
        chain = " &rarr;<br>".join(_cell(s) for s in by_layer["view"])
        top = f" (top {report.default_limit} by default)" if report.ranked else ""
        out.append(
            f"| `{report.name}`{top} | {counts[report.summary]} | "
            + " | ".join(cells)
            + f" | {chain} |"
        )
    out += ["", "Every SQL file, layer by layer:", ""]
    out += ["| file | what it is (the first sentence of its header) |", "|---|---|"]
    for layer in LAYERS:
        for f in sqlfiles.layer(layer, fragments=True):
            what = f.first_sentence.replace("|", "&#124;")
            out.append(f"| `views/{f.name}` | {what} |")
    return "\n".join(out) + "\n"


def definitions() -> str:
    """The reports as the manual defines them: for each report of the registry, what one row
    is (the first sentence of its view file), what it counts (its summary's ``counts``) and its
    order (the export's ORDER BY, or the ranking of a top view)."""
    rows = []
    for report in registry.reports():
        summary = next(s for s in registry.summaries() if s.name == report.summary)
        what = sqlfiles.load(report.file.removeprefix("views/")).first_sentence.split(": ", 1)[-1]
        if report.order is not None:
            order = report.order
        else:
            ranking = (
                report.ranking.rsplit("ORDER BY", 1)[-1]
                .strip()
                .replace(" r.", " ")
                .removeprefix("r.")
            )
            order = f"{ranking} (top {report.default_limit} by default)"
        rows.append(f"| `{report.name}` | {what} | {summary.counts} | {order} |")
    head = "| report | what it is | it counts | order |\n|---|---|---|---|\n"
    return head + "\n".join(rows) + "\n"
