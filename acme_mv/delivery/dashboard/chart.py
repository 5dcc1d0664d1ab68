"""The open-orders chart as a server-side SVG: stacked bars by delivery date, one colour per status.

Drawn here rather than by a JavaScript chart library: nothing to vendor or
fetch, the page stays air-gap safe, and the chart is a pure function of the
``open_orders`` rows and today's date that a test can read back. Colours are
presentation attributes (no inline ``style``) so the page's
Content-Security-Policy can forbid inline styles.

The x axis is a calendar: one bar per day from the earliest date shown to the
latest (days without open orders are empty bars), ticks every 1, 2, 7, 14 days
or month, today marked by a line and the days before it (overdue) on a red
band. Dates more than :data:`OLDER_AFTER_DAYS` before today are one "older"
bar at the left, dates more than :data:`LATER_AFTER_DAYS` after today one
"later" bar, orders without a delivery date one "no date" bar at the right.
Why a grouped "older" bar rather than a broken axis: what the lead acts on is
how many orders are long overdue, which one bar says at a glance; a broken axis
would still spend a thin bar on each old day and hide that total.

Every bar is a ``<g class="bar">`` with ``data-date`` (a day), or
``data-bucket`` (``older``, ``later``, ``none``) and ``data-total``; its
coloured segments are ``<rect>`` with ``data-status`` and ``data-count``, and, for a day or
the "no date" bar, ``data-key``: the open_orders row's key as ``GET /api/detail`` takes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from xml.sax.saxutils import escape, quoteattr

#: the open statuses of the contract, bottom to top, and their colours
STATUS_COLOURS = {
    "PENDING": "#d97706",
    "PROCESSING": "#2563eb",
    "REPROCESSING": "#7c3aed",
}
OTHER_COLOUR = "#6b7280"
OVERDUE_BAND = "#fee2e2"
OVERDUE_INK = "#b91c1c"

WIDTH = 1000
HEIGHT = 300
MARGIN_LEFT = 52
MARGIN_RIGHT = 12
MARGIN_TOP = 26
MARGIN_BOTTOM = 40
#: dates older than this many days before today share one "older" bar (the tail stays readable)
OLDER_AFTER_DAYS = 28
#: dates more than this many days after today share one "later" bar (bars stay wider than 5 px)
LATER_AFTER_DAYS = 120
#: at most about this many date ticks on the x axis
MAX_TICKS = 12
#: at most this many gridlines above zero on the y axis
MAX_GRIDLINES = 6
#: a bucket bar (older, later, no date) takes this many day slots, gap included
BUCKET_SLOTS = 2.5
#: a bucket bar is at most this wide (when the days are few and their slots wide)
BUCKET_WIDTH = 40


@dataclass(frozen=True, kw_only=True)
class Axis:
    """The chart's x range: the days drawn one bar each, and what falls in the buckets."""

    first: date
    last: date
    #: open orders by status for the dates before ``first`` / after ``last`` / without a date
    older: dict[str, int] = field(default_factory=dict)
    later: dict[str, int] = field(default_factory=dict)
    none: dict[str, int] = field(default_factory=dict)

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]


def open_orders_svg(rows: Sequence[Sequence[str]], *, today: date) -> str:
    """``open_orders`` CSV rows (delivery_date, status, open_orders) -> an SVG document."""
    by_day: dict[date, dict[str, int]] = {}
    statuses: list[str] = list(STATUS_COLOURS)
    none: dict[str, int] = {}
    for delivery_date, status, text in rows:
        stack = by_day.setdefault(day_of(delivery_date), {}) if delivery_date else none
        stack[status] = stack.get(status, 0) + int(text)
        if status not in statuses:
            statuses.append(status)
    axis = x_axis(by_day, none, today=today)
    stacks = [(f"data-date={quoteattr(d.isoformat())}", by_day.get(d, {})) for d in axis.days]
    buckets_left = [("older", axis.older)] if axis.older else []
    buckets_right = [(k, s) for k, s in (("later", axis.later), ("none", axis.none)) if s]
    tallest = max(
        (sum(s.values()) for s in [*by_day.values(), axis.older, axis.later, none]), default=0
    )
    top, step = y_scale(tallest)
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    base_y = MARGIN_TOP + plot_h
    slots = len(stacks) + BUCKET_SLOTS * (len(buckets_left) + len(buckets_right))
    slot = plot_w / slots
    bar_w = max(slot * 0.8, 1.0)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="Open orders by delivery date and status" class="chart" '
        f'data-first="{axis.first}" data-last="{axis.last}" data-today="{today}" '
        f'data-y-max="{top}">'
    ]
    out.extend(_legend(statuses))
    out.extend(_y_grid(top, step, plot_h))

    def x_of(i: float) -> float:
        return MARGIN_LEFT + i * slot

    day0 = BUCKET_SLOTS * len(buckets_left)  # the slot of axis.first
    overdue = min(max((today - axis.first).days, 0), len(stacks))
    if overdue or buckets_left:
        x1 = x_of(day0 + overdue)
        out.append(
            f'<rect class="overdue-band" x="{MARGIN_LEFT}" y="{MARGIN_TOP}" '
            f'width="{x1 - MARGIN_LEFT:.1f}" height="{plot_h}" fill="{OVERDUE_BAND}"/>'
            f'<text x="{MARGIN_LEFT + 4}" y="{MARGIN_TOP + 12}" font-size="11" '
            f'fill="{OVERDUE_INK}">overdue</text>'
        )
    for i, (key, stack) in enumerate(buckets_left):
        out.extend(_bucket(x_of(i * BUCKET_SLOTS + 1.25), key, stack, axis, slot, statuses, top))
    for i, (attr, stack) in enumerate(stacks):
        day = axis.days[i]
        x = x_of(day0 + i) + (slot - bar_w) / 2
        overdue_day = day < today
        name = f"{day:%a} {day.day} {day:%b %Y}" + (" (overdue)" if overdue_day else "")
        out.append(
            _bar(
                x,
                bar_w,
                stack,
                statuses,
                top,
                attr,
                name=name,
                overdue=overdue_day,
                detail=(day.isoformat(),),
            )
        )
    for day, text in _ticks(axis):
        i = (day - axis.first).days
        out.append(_label(x_of(day0 + i + 0.5), base_y, text, tick=True))
    if axis.first <= today <= axis.last:
        tx = x_of(day0 + (today - axis.first).days)
        out.append(
            f'<line class="today" data-date="{today}" x1="{tx:.1f}" y1="{MARGIN_TOP - 4}" '
            f'x2="{tx:.1f}" y2="{base_y}" stroke="{OVERDUE_INK}" stroke-width="2"/>'
            f'<text x="{tx + 3:.1f}" y="{MARGIN_TOP + 8}" font-size="11" font-weight="bold" '
            f'fill="{OVERDUE_INK}">today</text>'
        )
    right0 = day0 + len(stacks)
    for i, (key, stack) in enumerate(buckets_right):
        centre = x_of(right0 + i * BUCKET_SLOTS + 1.25)
        out.extend(_bucket(centre, key, stack, axis, slot, statuses, top))
    if tallest == 0:
        out.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" font-size="14" '
            'text-anchor="middle" fill="#6b7280">no open orders</text>'
        )
    out.append(
        f'<line x1="{MARGIN_LEFT}" y1="{base_y}" x2="{WIDTH - MARGIN_RIGHT}" '
        f'y2="{base_y}" stroke="#9ca3af"/>'
    )
    out.append("</svg>")
    return "".join(out)


def day_of(text: str) -> date:
    """A delivery date of the CSV; PostgreSQL's dates Python has not (``-infinity``, BC, after
    9999, ``infinity``) are ``date.min`` or ``date.max``: the older or later bar, never an error."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        return date.min if text.startswith("-") or text.endswith(" BC") else date.max


def x_axis(by_day: dict[date, dict[str, int]], none: dict[str, int], *, today: date) -> Axis:
    """The days drawn one by one (today always among them) and the buckets beyond them."""
    oldest = today - timedelta(days=OLDER_AFTER_DAYS)
    latest = today + timedelta(days=LATER_AFTER_DAYS)
    first = max(min([*by_day, today]), oldest)
    last = min(max([*by_day, today]), latest)
    older: dict[str, int] = {}
    later: dict[str, int] = {}
    for day, stack in by_day.items():
        bucket = older if day < first else later if day > last else None
        if bucket is not None:
            for status, n in stack.items():
                bucket[status] = bucket.get(status, 0) + n
    return Axis(first=first, last=last, older=older, later=later, none=dict(none))


def y_scale(tallest: int) -> tuple[int, int]:
    """(top, step) of the y axis: the top at or just above ``tallest``, a multiple of the
    smallest 1, 2 or 5 times a power of ten step that needs at most MAX_GRIDLINES (110 -> 120)."""
    if tallest <= 0:
        return 1, 1
    power = 1
    while True:
        for m in (1, 2, 5):
            n = -(-tallest // (m * power))
            if n <= MAX_GRIDLINES:
                return n * m * power, m * power
        power *= 10


def _ticks(axis: Axis) -> list[tuple[date, str]]:
    """Day labels at 1, 2, 7 (Mondays), 14 (every other Monday) days or months (the 1st)."""
    days = axis.days
    for every in (1, 2, 7, 14):
        if len(days) / every <= MAX_TICKS:
            if every < 7:
                return [(d, f"{d.day} {d:%b}") for d in days[::every]]
            mondays = [d for d in days if d.weekday() == 0][:: every // 7]
            return [(d, f"{d.day} {d:%b}") for d in mondays]
    return [(d, f"{d:%b %Y}") for d in days if d.day == 1]


def _bucket(
    centre: float,
    key: str,
    stack: dict[str, int],
    axis: Axis,
    slot: float,
    statuses: list[str],
    top: int,
) -> list[str]:
    """A bucket's bar (two day slots wide, at most BUCKET_WIDTH) and its name under the axis."""
    width = min(slot * 2, max(slot * 0.8, BUCKET_WIDTH))
    name = _bucket_label(key, axis)
    detail = (None,) if key == "none" else ()  # the older and later bars span many dates
    bar = _bar(
        centre - width / 2,
        width,
        stack,
        statuses,
        top,
        f'data-bucket="{key}"',
        name=name,
        detail=detail,
    )
    return [bar, _label(centre, MARGIN_TOP + HEIGHT - MARGIN_TOP - MARGIN_BOTTOM, name)]


def _bucket_label(key: str, axis: Axis) -> str:
    if key == "older":
        return f"before {axis.first.day} {axis.first:%b}"
    if key == "later":
        return f"after {axis.last.day} {axis.last:%b}"
    return "no date"


def _legend(statuses: list[str]) -> list[str]:
    out = []
    x = MARGIN_LEFT
    for status in statuses:
        colour = STATUS_COLOURS.get(status, OTHER_COLOUR)
        name = status.capitalize()
        out.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{x + 16}" y="16" font-size="12" fill="#374151">{escape(name)}</text>')
        x += 28 + 7 * len(name)
    return out


def _y_grid(top: int, step: int, plot_h: int) -> list[str]:
    out = []
    for value in range(0, top + 1, step):
        y = MARGIN_TOP + plot_h - plot_h * value / top
        out.append(
            f'<line x1="{MARGIN_LEFT}" y1="{y:.1f}" '
            f'x2="{WIDTH - MARGIN_RIGHT}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" font-size="11" '
            f'text-anchor="end" fill="#6b7280">{value:,}</text>'
        )
    return out


def _bar(
    x: float,
    width: float,
    stack: dict[str, int],
    statuses: list[str],
    top: int,
    attrs: str,
    *,
    name: str,
    overdue: bool = False,
    detail: tuple[str | None, ...] = (),
) -> str:
    """One bar: a group with its total and a title, its segments stacked bottom up; ``detail``
    holds the delivery date (None: NULL) of a bar whose segments are one open_orders row each."""
    total = sum(stack.values())
    cls = "bar overdue" if overdue else "bar"
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    # a transparent full-height target: a bar of one order still shows its title on hover
    out = [
        f'<g class="{cls}" {attrs} data-total="{total}">'
        f'<rect class="hit" x="{x:.1f}" y="{MARGIN_TOP}" width="{width:.1f}" height="{plot_h}" '
        'fill="transparent"/>'
    ]
    base = float(MARGIN_TOP + plot_h)
    for status in statuses:
        count = stack.get(status, 0)
        if not count:
            continue
        h = plot_h * count / top
        base -= h
        out.append(
            f'<rect x="{x:.1f}" y="{base:.1f}" width="{width:.1f}" height="{h:.1f}" '
            f'fill="{STATUS_COLOURS.get(status, OTHER_COLOUR)}" data-status={quoteattr(status)} '
            f'data-count="{count}"{_key(detail, status)}/>'
        )
    parts = ", ".join(f"{s.capitalize()} {stack[s]:,}" for s in statuses if stack.get(s))
    title = f"{name}: {total:,} open orders" + (f" ({parts})" if parts else "")
    out.append(f"<title>{escape(title)}</title>")
    out.append("</g>")
    return "".join(out)


def _key(detail: tuple[str | None, ...], status: str) -> str:
    """A segment's ``data-key`` attribute (JSON, null for NULL), or nothing."""
    if not detail:
        return ""
    return f" data-key={quoteattr(json.dumps({'delivery_date': detail[0], 'status': status}))}"


def _label(x: float, base_y: float, text: str, *, tick: bool = False) -> str:
    """A date tick (first line) or a bucket's name (second line, so the two never overlap)."""
    if tick:
        return (
            f'<line x1="{x:.1f}" y1="{base_y}" x2="{x:.1f}" y2="{base_y + 4}" stroke="#9ca3af"/>'
            f'<text x="{x:.1f}" y="{base_y + 16}" font-size="11" fill="#374151" '
            f'text-anchor="middle">{escape(text)}</text>'
        )
    return (
        f'<text x="{x:.1f}" y="{base_y + 32}" font-size="11" font-weight="bold" fill="#374151" '
        f'text-anchor="middle">{escape(text)}</text>'
    )
