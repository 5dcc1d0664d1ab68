"""The open-orders chart as a server-side SVG: stacked bars by delivery date, one colour per status.

Drawn here rather than by a JavaScript chart library: nothing to vendor or
fetch, the page stays air-gap safe, and the chart is a pure function of the
``open_orders`` rows that a test can read back. Colours are presentation
attributes (no inline ``style``) so the page's Content-Security-Policy can
forbid inline styles.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

#: the open statuses of the contract, bottom to top, and their colours
STATUS_COLOURS = {
    "PENDING": "#d97706",
    "PROCESSING": "#2563eb",
    "REPROCESSING": "#7c3aed",
}
OTHER_COLOUR = "#6b7280"
NO_DATE = "no date"

WIDTH = 900
HEIGHT = 300
MARGIN_LEFT = 56
MARGIN_RIGHT = 12
MARGIN_TOP = 28
MARGIN_BOTTOM = 56
#: at most this many date labels on the x axis (every k-th date otherwise)
MAX_LABELS = 16


def open_orders_svg(rows: Sequence[Sequence[str]]) -> str:
    """``open_orders`` CSV rows (delivery_date, status, open_orders) -> an SVG document."""
    dates: list[str] = []
    stacks: dict[str, dict[str, int]] = {}
    statuses: list[str] = [s for s in STATUS_COLOURS]
    for delivery_date, status, text in rows:
        label = delivery_date or NO_DATE
        if label not in stacks:
            stacks[label] = {}
            dates.append(label)
        stacks[label][status] = stacks[label].get(status, 0) + int(text)
        if status not in statuses:
            statuses.append(status)
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    top = max((sum(s.values()) for s in stacks.values()), default=0)
    scale_max = _nice(top)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="Open orders by delivery date and status" class="chart">'
    ]
    # legend
    x = MARGIN_LEFT
    for status in statuses:
        colour = STATUS_COLOURS.get(status, OTHER_COLOUR)
        out.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{colour}"/>')
        out.append(
            f'<text x="{x + 16}" y="16" font-size="12" fill="#374151">{escape(status)}</text>'
        )
        x += 24 + 8 * len(status)
    # y axis: 5 gridlines
    for i in range(6):
        value = scale_max * i // 5
        y = MARGIN_TOP + plot_h - (plot_h * value / scale_max if scale_max else 0)
        out.append(
            f'<line x1="{MARGIN_LEFT}" y1="{y:.1f}" '
            f'x2="{WIDTH - MARGIN_RIGHT}" y2="{y:.1f}" stroke="#e5e7eb"/>'
        )
        out.append(
            f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" font-size="11" '
            f'text-anchor="end" fill="#6b7280">{value:,}</text>'
        )
    if not dates:
        out.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" font-size="14" '
            'text-anchor="middle" fill="#6b7280">no open orders</text>'
        )
    slot = plot_w / max(len(dates), 1)
    bar = max(slot * 0.8, 1.0)
    every = max(1, -(-len(dates) // MAX_LABELS))
    for i, label in enumerate(dates):
        bx = MARGIN_LEFT + i * slot + (slot - bar) / 2
        base = float(MARGIN_TOP + plot_h)
        for status in statuses:
            count = stacks[label].get(status, 0)
            if not count:
                continue
            h = plot_h * count / scale_max
            base -= h
            title = escape(f"{label} {status}: {count:,}")
            out.append(
                f'<rect x="{bx:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{STATUS_COLOURS.get(status, OTHER_COLOUR)}" data-date={quoteattr(label)} '
                f"data-status={quoteattr(status)} data-key={quoteattr(_key(label, status))} "
                f'data-count="{count}"><title>{title}</title></rect>'
            )
        if i % every == 0:
            tx = bx + bar / 2
            ty = MARGIN_TOP + plot_h + 12
            out.append(
                f'<text x="{tx:.1f}" y="{ty:.1f}" font-size="10" fill="#374151" text-anchor="end" '
                f'transform="rotate(-45 {tx:.1f} {ty:.1f})">{escape(label)}</text>'
            )
    out.append(
        f'<line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP + plot_h}" x2="{WIDTH - MARGIN_RIGHT}" '
        f'y2="{MARGIN_TOP + plot_h}" stroke="#9ca3af"/>'
    )
    out.append("</svg>")
    return "".join(out)


def _key(label: str, status: str) -> str:
    """A bar's open_orders row key, as ``GET /api/detail`` takes it (JSON, null for NULL)."""
    return json.dumps({"delivery_date": None if label == NO_DATE else label, "status": status})


def _nice(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is >= value (axis top)."""
    if value <= 0:
        return 1
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10
