"""The open-orders chart and the page's totals as pure functions (no database): the x axis is a
calendar with today marked and the overdue days apart, the long tail and the NULL dates are
labelled bars, the y axis ends at a round number just above the tallest bar."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, timedelta
from typing import Any

import pytest

from acme_mv.delivery.dashboard.app import totals
from acme_mv.delivery.dashboard.chart import (
    LATER_AFTER_DAYS,
    OLDER_AFTER_DAYS,
    open_orders_svg,
    y_scale,
)

SVG = "{http://www.w3.org/2000/svg}"
TODAY = date(2026, 12, 7)


def _chart(rows: list[tuple[str, str, int]], today: date = TODAY) -> ET.Element:
    return ET.fromstring(open_orders_svg([(d, s, str(n)) for d, s, n in rows], today=today))


def _bars(svg: ET.Element) -> list[ET.Element]:
    return [g for g in svg.iter(f"{SVG}g") if "bar" in g.get("class", "").split()]


def _days(svg: ET.Element) -> list[str]:
    return [g.attrib["data-date"] for g in _bars(svg) if "data-date" in g.attrib]


def _buckets(svg: ET.Element) -> dict[str, int]:
    """The bucket bars' totals by bucket (older, later, none)."""
    return {
        g.attrib["data-bucket"]: int(g.attrib["data-total"])
        for g in _bars(svg)
        if "data-bucket" in g.attrib
    }


def _x(el: ET.Element) -> float:
    rect = el.find(f"{SVG}rect")
    return float(el.get("x1") or (rect.get("x") if rect is not None else None) or "nan")


def test_one_bar_per_day_from_the_first_date_to_the_last_empty_days_included() -> None:
    svg = _chart([("2026-12-03", "PENDING", 2), ("2026-12-11", "PROCESSING", 1)])
    days = _days(svg)
    assert days == [str(date(2026, 12, 3) + timedelta(days=i)) for i in range(9)]
    totals_by_day = {g.attrib["data-date"]: int(g.attrib["data-total"]) for g in _bars(svg)}
    assert totals_by_day["2026-12-03"] == 2 and totals_by_day["2026-12-11"] == 1
    assert sum(totals_by_day.values()) == 3  # the empty days are bars of 0
    assert (svg.get("data-first"), svg.get("data-last")) == ("2026-12-03", "2026-12-11")


def test_today_is_marked_between_its_neighbours_and_the_days_before_are_overdue() -> None:
    svg = _chart([("2026-12-03", "PENDING", 2), ("2026-12-11", "PROCESSING", 1)])
    (marker,) = [el for el in svg.iter(f"{SVG}line") if el.get("class") == "today"]
    assert marker.get("data-date") == "2026-12-07"
    by_day = {g.attrib["data-date"]: g for g in _bars(svg) if "data-date" in g.attrib}
    assert _x(by_day["2026-12-06"]) < _x(marker) < _x(by_day["2026-12-07"])
    overdue = [d for d, g in by_day.items() if "overdue" in g.get("class", "")]
    assert overdue == ["2026-12-03", "2026-12-04", "2026-12-05", "2026-12-06"]
    (band,) = [el for el in svg.iter(f"{SVG}rect") if el.get("class") == "overdue-band"]
    assert float(band.get("x", "0")) + float(band.get("width", "0")) == pytest.approx(
        _x(marker), abs=0.15
    )


def test_the_axis_reaches_today_when_every_date_is_in_the_future() -> None:
    days = _days(_chart([("2026-12-10", "PENDING", 1)]))
    assert days[0] == "2026-12-07" and days[-1] == "2026-12-10" and len(days) == 4


def test_old_dates_far_dates_and_no_date_are_labelled_bars_apart() -> None:
    oldest = TODAY - timedelta(days=OLDER_AFTER_DAYS)
    rows = [
        ("2026-08-01", "PENDING", 5),
        (str(oldest - timedelta(days=1)), "PROCESSING", 2),
        (str(oldest), "PENDING", 1),
        ("2026-12-08", "PENDING", 1),
        (str(TODAY + timedelta(days=LATER_AFTER_DAYS + 1)), "PENDING", 4),
        ("", "PENDING", 3),
        ("", "REPROCESSING", 1),
    ]
    svg = _chart(rows)
    assert _buckets(svg) == {"older": 7, "later": 4, "none": 4}
    days = _days(svg)
    assert days[0] == str(oldest) and days[-1] == str(TODAY + timedelta(days=LATER_AFTER_DAYS))
    order = [g.get("data-bucket") or "day" for g in _bars(svg)]
    assert order[0] == "older" and order[-2:] == ["later", "none"]
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert "no date" in texts and f"before {oldest.day} {oldest:%b}" in texts


@pytest.mark.parametrize(
    ("tallest", "top", "step"),
    [(0, 1, 1), (1, 1, 1), (5, 5, 1), (7, 8, 2), (110, 120, 20), (100, 100, 20), (1234, 1500, 500)],
    ids=["empty", "one", "five", "seven", "hundred_ten", "hundred", "thousands"],
)
def test_the_y_axis_ends_at_a_round_number_just_above_the_tallest_bar(
    tallest: int, top: int, step: int
) -> None:
    assert y_scale(tallest) == (top, step)


def test_the_chart_y_max_follows_its_tallest_bar() -> None:
    svg = _chart(
        [
            ("2026-12-08", "PENDING", 60),
            ("2026-12-08", "PROCESSING", 50),
            ("2026-12-09", "PENDING", 3),
        ]
    )
    assert svg.get("data-y-max") == "120"
    labels = [t.text for t in svg.iter(f"{SVG}text") if t.get("text-anchor") == "end"]
    assert labels == ["0", "20", "40", "60", "80", "100", "120"]


def test_no_open_orders_is_one_empty_day_today() -> None:
    svg = _chart([])
    assert _days(svg) == ["2026-12-07"]
    assert "no open orders" in [t.text for t in svg.iter(f"{SVG}text")]


def test_totals_count_open_pending_and_overdue_from_the_reports() -> None:
    tables: dict[str, dict[str, Any]] = {
        "open_orders": {
            "columns": ["delivery_date", "status", "open_orders"],
            "rows": [
                ["2026-12-06", "PENDING", "1200"],
                ["2026-12-07", "PENDING", "3"],
                ["", "PENDING", "4"],
            ],
        },
        "pending_items": {
            "columns": ["product_id", "product_name", "pending_items"],
            "rows": [["1", "a", "10"], ["2", "b", "5"]],
        },
    }
    assert totals(tables, today=TODAY) == {
        "open_orders": 1207,
        "pending_items": 15,
        "overdue_orders": 1200,  # before today only: not today's, not the undated
    }
    assert totals({}, today=TODAY) == dict.fromkeys(
        ("open_orders", "pending_items", "overdue_orders")
    )


def test_dates_python_cannot_hold_go_to_the_older_and_later_bars() -> None:
    rows = [
        ("-infinity", "PENDING", 1),
        ("0044-03-15 BC", "PENDING", 2),
        ("2026-12-08", "PENDING", 1),
        ("infinity", "PENDING", 4),
        ("12345-01-01", "PENDING", 8),
    ]
    svg = _chart(rows)
    assert _buckets(svg) == {"older": 3, "later": 12}
    tables = {
        "open_orders": {
            "columns": ["delivery_date", "status", "open_orders"],
            "rows": [list(map(str, r)) for r in rows],
        }
    }
    assert totals(tables, today=TODAY)["overdue_orders"] == 3
