"""The dashboard in a real headless browser: Debian's chromium driven by its chromedriver through
selenium (no browser is downloaded). One browser for the module.

The page loads and shows the four reports equal to the exports; after a source change + sync +
refresh it updates without a reload; the CSV link downloads export's bytes; the pending-items
table sorts by quantity; the freshness turns red past --stale-after; at 1366x768 the totals and
the four report cards fit the first screen, the chart has one bar per day of its range and marks
today. Screenshots are saved to tests/artifacts/ (gitignored) for people to look at.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from acme_mv.delivery.dashboard.app import ReportCache, create_app, running
from tests.support.cli_runner import run
from tests.support.delivery_data import EXPECTED, sync_and_refresh

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
#: generous: a wait ends as soon as its condition holds (never a timing assertion)
WAIT_S = 60

TABLE_JS = """
const t = document.getElementById('report-' + arguments[0]);
if (!t || !t.tHead) return null;
const head = Array.from(t.tHead.rows[0].cells, c => c.dataset.column);
return [head, ...Array.from(t.tBodies[0].rows, r => Array.from(r.cells, c => c.dataset.value))];
"""


@pytest.fixture(scope="module")
def downloads() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="acme-dashboard-downloads-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[webdriver.Chrome]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:  # never a skip: the browser is part of the test environment (.ci/run installs it)
        pytest.fail(f"{', '.join(missing)} missing: apt-get install -y chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="acme-chromium-profile-")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,1500",
    ):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _serve(url: str, **kwargs: Any) -> Any:
    return running(create_app(ReportCache(url, check_every=0.2), poll_every=0.5, **kwargs))


def _table(browser: webdriver.Chrome, name: str) -> list[list[str]] | None:
    rows = browser.execute_script(TABLE_JS, name)
    return rows if rows is None else [list(r) for r in rows]


def _export_rows(tmp_path: Path) -> dict[str, list[list[str]]]:
    folder = tmp_path / f"export-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    res = run("export", "--all", "--output-dir", str(folder))
    assert res.exit_code == 0, res.stderr
    found = {}
    for path in folder.iterdir():
        name = path.name.split("_result_")[0]
        found[name] = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
    return found


def _wait_for_tables(browser: webdriver.Chrome, expected: dict[str, list[list[str]]]) -> None:
    WebDriverWait(browser, WAIT_S).until(
        lambda b: all(_table(b, n) == rows for n, rows in expected.items())
    )


def test_the_page_shows_the_exports_and_follows_refreshes(
    browser: webdriver.Chrome, refreshed: str, tmp_path: Path
) -> None:
    with _serve(refreshed, stale_after=3600) as url:
        browser.get(url + "/")
        before = _export_rows(tmp_path)
        assert set(before) == set(EXPECTED)
        _wait_for_tables(browser, before)
        freshness = browser.find_element(By.ID, "freshness")
        assert freshness.find_element(By.ID, "age").text.endswith("s ago")
        assert "stale" not in (freshness.get_attribute("class") or "")
        bars = browser.find_elements(By.CSS_SELECTOR, "#chart svg rect[data-count]")
        assert sum(int(b.get_attribute("data-count") or 0) for b in bars) == 5  # the open orders
        browser.execute_script("window.__noReload = 'still here';")
        version = browser.find_element(By.TAG_NAME, "body").get_attribute("data-version")

        # the source changes; sync + refresh; the page follows without a reload
        with psycopg.connect(refreshed, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
                "('2026-12-11', 3, 'PENDING')"
            )
            conn.execute(
                "INSERT INTO operations.order_items (order_id, product_id, "
                "quanity) VALUES (7, 2, 500)"
            )
        sync_and_refresh(refreshed)
        after = _export_rows(tmp_path)
        assert after != before
        _wait_for_tables(browser, after)
        assert browser.execute_script("return window.__noReload;") == "still here"
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-version") != version
        bars = browser.find_elements(By.CSS_SELECTOR, "#chart svg rect[data-count]")
        assert sum(int(b.get_attribute("data-count") or 0) for b in bars) == 6

        ARTIFACTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))


def test_the_csv_link_downloads_the_export(
    browser: webdriver.Chrome, refreshed: str, downloads: Path, tmp_path: Path
) -> None:
    res = run("export", "pending_items", "--output-dir", str(tmp_path))
    assert res.exit_code == 0, res.stderr
    exported = Path(res.stdout.strip())
    with _serve(refreshed) as url:
        browser.get(url + "/")
        _wait_for_tables(browser, {"pending_items": _export_rows(tmp_path)["pending_items"]})
        for old in downloads.iterdir():
            old.unlink()
        browser.find_element(By.CSS_SELECTOR, 'a[href="/reports/pending_items.csv"]').click()

        def downloaded(_: object) -> Path | None:
            done = [p for p in downloads.iterdir() if p.suffix == ".csv"]
            return done[0] if done else None

        path = WebDriverWait(browser, WAIT_S).until(downloaded)
        assert path is not None  # until() returns the first truthy answer
        assert path.name.startswith("pending_items_result_")
        assert path.read_bytes() == exported.read_bytes() == EXPECTED["pending_items"].encode()


def test_pending_items_sort_by_quantity(
    browser: webdriver.Chrome, refreshed: str, tmp_path: Path
) -> None:
    with _serve(refreshed) as url:
        browser.get(url + "/")
        exported = _export_rows(tmp_path)["pending_items"]
        _wait_for_tables(browser, {"pending_items": exported})
        header = browser.find_element(
            By.CSS_SELECTOR, '#report-pending_items th[data-column="pending_items"]'
        )
        header.click()
        rows = _table(browser, "pending_items")
        assert rows is not None
        assert rows[1:] == sorted(exported[1:], key=lambda r: -int(r[2]))
        browser.find_element(
            By.CSS_SELECTOR, '#report-pending_items th[data-column="pending_items"]'
        ).click()
        rows = _table(browser, "pending_items")
        assert rows is not None and rows[1:] == sorted(exported[1:], key=lambda r: int(r[2]))


def test_the_freshness_turns_red_past_stale_after(
    browser: webdriver.Chrome, refreshed: str
) -> None:
    with _serve(refreshed, stale_after=0) as url:
        browser.get(url + "/")
        WebDriverWait(browser, WAIT_S).until(
            lambda b: "stale" in (b.find_element(By.ID, "freshness").get_attribute("class") or "")
        )
        colour = browser.find_element(By.ID, "freshness").value_of_css_property("background-color")
        assert colour in ("rgba(185, 28, 28, 1)", "rgb(185, 28, 28)")


#: the page's boxes a logistics lead reads first, and where each one ends
BOXES_JS = """
return Array.from(document.querySelectorAll('#totals .total, main > section.card'), e => {
  const r = e.getBoundingClientRect();
  return [e.id, r.top + window.scrollY, r.bottom + window.scrollY];
});
"""


@pytest.mark.parametrize(("width", "height"), [(1366, 768), (1920, 1080)])
def test_everything_is_on_the_first_screen_with_a_calendar_chart(
    browser: webdriver.Chrome, refreshed: str, width: int, height: int
) -> None:
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        with _serve(refreshed) as url:
            browser.get(url + "/")
            WebDriverWait(browser, WAIT_S).until(
                lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-version")
            )
            with urllib.request.urlopen(url + "/api/data", timeout=30) as res:
                doc = json.load(res)
            assert browser.execute_script("return [innerWidth, innerHeight]") == [width, height]
            boxes = browser.execute_script(BOXES_JS)
            assert [b[0] for b in boxes] == [
                "total-open_orders",
                "total-overdue_orders",
                "total-pending_items",
                "card-chart",
                "card-top_dates",
                "card-open_orders",
                "card-pending_items",
                "card-top_customers",
            ]
            assert all(0 <= top < bottom <= height for _, top, bottom in boxes), boxes
            for name, value in doc["totals"].items():
                total = browser.find_element(By.ID, f"total-{name}")
                assert total.get_attribute("data-value") == str(value)
            assert (doc["totals"]["open_orders"], doc["totals"]["pending_items"]) == (5, 23)
            heads = browser.find_elements(By.CSS_SELECTOR, "#report-open_orders th")
            assert [h.text for h in heads] == ["Delivery date", "Status", "Open orders"]
            assert "batch" not in browser.find_element(By.ID, "freshness").text

            chart = browser.find_element(By.CSS_SELECTOR, "#chart svg")
            first = date.fromisoformat(chart.get_attribute("data-first") or "")
            last = date.fromisoformat(chart.get_attribute("data-last") or "")
            days = browser.find_elements(By.CSS_SELECTOR, "#chart g.bar[data-date]")
            assert len(days) == (last - first).days + 1
            bars = browser.find_elements(By.CSS_SELECTOR, "#chart g.bar")
            assert sum(int(b.get_attribute("data-total") or 0) for b in bars) == 5
            (marker,) = browser.find_elements(By.CSS_SELECTOR, "#chart line.today")
            assert marker.get_attribute("data-date") == doc["today"]
            (undated,) = browser.find_elements(By.CSS_SELECTOR, '#chart g.bar[data-bucket="none"]')
            assert undated.get_attribute("data-total") == "1"
            tie = browser.find_element(By.ID, "tie-top_dates")
            assert tie.text == "3 dates tied at 1 open order; showing 2 of them."

            ARTIFACTS.mkdir(exist_ok=True)
            assert browser.save_screenshot(str(ARTIFACTS / f"dashboard-{width}x{height}.png"))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


DETAIL_TOTAL_JS = """
const t = document.getElementById('detail-rows');
const panel = document.getElementById('detail');
if (!panel || panel.hidden || !t || t.dataset.total === undefined) return null;
return [Number(t.dataset.total), t.tBodies[0].rows.length];
"""


def test_a_click_on_a_row_or_a_bar_shows_its_detail(
    browser: webdriver.Chrome, refreshed: str, tmp_path: Path
) -> None:
    with _serve(refreshed) as url:
        browser.get(url + "/")
        exported = _export_rows(tmp_path)
        _wait_for_tables(browser, exported)
        top = exported["top_dates"][1]  # delivery_date, open_orders
        browser.find_element(By.CSS_SELECTOR, "#report-top_dates tbody tr").click()
        got = WebDriverWait(browser, WAIT_S).until(lambda b: b.execute_script(DETAIL_TOTAL_JS))
        assert got == [int(top[1]), int(top[1])]
        assert top[0] in browser.find_element(By.ID, "detail-title").text
        browser.find_element(By.ID, "detail-close").click()
        assert not browser.find_element(By.ID, "detail").is_displayed()

        bar = browser.find_elements(By.CSS_SELECTOR, "#chart svg rect[data-key]")[0]
        count = int(bar.get_attribute("data-count") or 0)
        browser.execute_script(
            "arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}));", bar
        )
        got = WebDriverWait(browser, WAIT_S).until(lambda b: b.execute_script(DETAIL_TOTAL_JS))
        assert got == [count, count]
        assert browser.find_element(By.ID, "detail").is_displayed()
