"""/docs and /redoc work offline: the pages and every asset they load come from the service."""

import functools
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests import test_processes as processes
from tests.conftest import wait_until
from tests.test_processes import UVICORN, Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Every host name resolves to nothing except the service on 127.0.0.1: a CDN cannot help.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


class References(HTMLParser):
    """The URLs a page loads by itself: script src, link href."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href"}.get(tag)
        self.urls += [value for name, value in attrs if name == wanted and value]


def references(html: str) -> list[str]:
    parser = References()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
def test_docs_page_and_every_asset_it_references_are_served_locally(
    client: TestClient, page: str, assets: set[str]
) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert "cdn." not in response.text and "fonts.googleapis" not in response.text
    urls = references(response.text)
    assert {url.rsplit("/", 1)[-1] for url in urls} == assets
    for url in urls:
        assert url.startswith("/"), f"{url} is not served by the service"
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
    assert client.get("/openapi.json").json()["info"]["title"] == "SpaceX crew ETL"


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={profile}", OFFLINE, "--virtual-time-budget=15000", *args],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install chromium): no browser test"
)
def test_docs_render_in_a_browser_without_internet(
    upstream: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a loaded machine may take longer than Server's usual wait to start the service
    monkeypatch.setattr(processes, "wait_until", functools.partial(wait_until, timeout=180))
    server = Server(UVICORN, "http://127.0.0.1:9")
    try:
        swagger = chromium("--dump-dom", f"{server.url}/docs")
        assert 'class="opblock-summary-path"' in swagger.stdout, swagger.stderr[-2000:]
        assert "/crew/{crew_id}" in swagger.stdout
        redoc = chromium("--dump-dom", f"{server.url}/redoc")
        assert "redoc-wrap" in redoc.stdout, redoc.stderr[-2000:]
        assert "Get one crew member" in redoc.stdout or "get_crew_member" in redoc.stdout
        screenshot = tmp_path / "docs.png"
        shot = chromium(
            f"--screenshot={screenshot}", "--window-size=1280,900", f"{server.url}/docs"
        )
        assert screenshot.exists(), shot.stderr[-2000:]
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # a blank page compresses to a few kB; the rendered operation list does not
        assert screenshot.stat().st_size > 30_000, os.fspath(screenshot)
    finally:
        server.stop()
