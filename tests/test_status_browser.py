"""The status page in a real browser: Debian's chromium, headless, driven by Selenium through
Debian's chromedriver, against the app served by uvicorn in its own process.

Screenshots go to test-artifacts/ (git-ignored). Skipped where no chromium is installed
(`apt-get install chromium chromium-driver`; .ci/run does it).
"""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import wait_until
from tests.fake_upstream import FakeUpstream, Fault, synthetic_crew
from tests.test_processes import UVICORN, Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no headless browser: install Debian's chromium and chromium-driver to run this test",
)


@pytest.fixture(name="browser")
def browser_fixture() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(argument)
    options.add_argument("--disable-dev-shm-usage")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(name="server")
def server_fixture(upstream: FakeUpstream) -> Iterator[Server]:
    server = Server(UVICORN, upstream.url, INGEST_PAGE_SIZE="5", MIGRATE_ON_START="false")
    yield server
    server.stop()


def finished_run(server: Server) -> dict[str, Any]:
    run_id = server.post("/ingest").json()["id"]

    def finished() -> bool:
        status = httpx.get(f"{server.url}/ingest/{run_id}").json()["status"]
        return status not in ("queued", "running")

    wait_until(finished)
    return dict(httpx.get(f"{server.url}/ingest/{run_id}").json())


def requested_urls(driver: Any) -> list[str]:
    """Every URL the page asked for, from the browser's network log."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def screenshot(driver: Any, width: int, name: str, dark: bool = False) -> Path:
    """The whole page at `width` CSS pixels."""
    scheme = "dark" if dark else "light"
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
    )
    metrics = {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": width < 500}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": height})
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert driver.get_screenshot_as_file(str(path))
    return path


def number(text: str) -> int:
    return int(text.replace(",", ""))


def test_page_after_a_success_and_a_failure(
    browser: Any, server: Server, upstream: FakeUpstream
) -> None:
    from selenium.webdriver.common.by import By

    upstream.records[3] = {**upstream.records[3], "status": "on mars"}
    assert finished_run(server)["status"] == "succeeded"
    upstream.fail(2, Fault("status", status=404))
    failed = finished_run(server)
    assert failed["status"] == "failed"
    runs = httpx.get(f"{server.url}/ingest").json()

    browser.get(f"{server.url}/")

    def text(selector: str) -> str:
        return str(browser.find_element(By.CSS_SELECTOR, selector).text)

    assert browser.find_element(By.ID, "freshness").get_attribute("data-state") == "last_failed"
    assert text("#last-run-h a") == f"run {failed['id']}"
    assert text("#last-run-status") == "failed"
    changes = browser.find_element(By.LINK_TEXT, "changes").get_attribute("href")
    assert changes == f"{server.url}/ingest/{failed['id']}/changes"
    assert text("#last-run-error") == failed["error"] == "page 2: HTTP 404 Not Found"
    shown = {
        element.get_attribute("data-count"): number(element.find_element(By.TAG_NAME, "dd").text)
        for element in browser.find_elements(By.CSS_SELECTOR, "#last-run-counts [data-count]")
    }
    assert shown == {name: runs["items"][0][name] for name in shown}
    assert set(shown) >= {"pages_fetched", "records_fetched", "records_rejected", "rows_inserted"}
    marks = browser.find_elements(By.CSS_SELECTOR, "#runs-chart g.run")
    assert [m.get_attribute("data-run-id") for m in marks] == [
        str(run["id"]) for run in reversed(runs["items"])
    ]
    assert len(marks) == runs["total"] == 2
    assert number(text("#crew-total")) == httpx.get(f"{server.url}/crew").json()["total"] == 17
    assert browser.find_element(By.ID, "runs-chart").accessible_name.startswith("Duration and rows")

    origin = "{0.scheme}://{0.netloc}".format(urlsplit(server.url))
    urls = requested_urls(browser)
    assert urls and urls[0] == f"{server.url}/"
    assert [url for url in urls if not url.startswith((origin + "/", "data:"))] == []
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []

    for width in (375, 1280):
        path = screenshot(browser, width, f"status-{width}.png")
        assert path.stat().st_size > 10_000
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"page scrolls sideways at {width} px"
    screenshot(browser, 1280, "status-1280-dark.png", dark=True)
    background = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)"  # the dark palette applied
    assert requested_urls(browser) == []  # resizing and dark mode fetched nothing


def test_page_follows_the_running_run_live_then_shows_its_end(
    browser: Any, server: Server, upstream: FakeUpstream
) -> None:
    from selenium.webdriver.common.by import By

    upstream.records += [synthetic_crew(index) for index in range(32)]
    upstream.page_delay_seconds = 0.5  # 10 pages of 5: five seconds of progress to watch
    run_id = server.post("/ingest").json()["id"]
    wait_until(lambda: httpx.get(f"{server.url}/ingest/{run_id}").json()["status"] == "running")
    browser.get(f"{server.url}/")
    browser.execute_script("window.sameLoad = true")  # gone if the page reloads

    def shown(name: str) -> int:
        selector = f'#last-run-counts [data-count="{name}"] dd'
        return number(browser.find_element(By.CSS_SELECTOR, selector).text)

    first = shown("pages_fetched")
    wait_until(lambda: shown("pages_fetched") > first or not same_load(browser))
    assert same_load(browser), "the page reloaded before showing any progress"
    assert browser.find_element(By.ID, "last-run-status").text == "running"
    wait_until(lambda: not same_load(browser))  # reloaded at the end: the final card
    assert browser.find_element(By.ID, "last-run-status").text == "succeeded"
    assert shown("rows_inserted") == 50 and shown("pages_fetched") == 10


def same_load(browser: Any) -> bool:
    return bool(browser.execute_script("return window.sameLoad === true"))
