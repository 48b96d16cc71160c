"""A hostile upstream over real HTTP: every case ends in a truthful run, the crew table intact.

Memory is measured on the serving process itself, started as an operator would (`Server`).
"""

import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import settings
from app.logs import configure_logging
from tests.conftest import crew_checksum, ingest, query_one, wait_until
from tests.fake_upstream import FakeUpstream, Fault, gzip_bomb
from tests.test_faults import assert_failed_untouched, loaded_fixture  # noqa: F401
from tests.test_processes import UVICORN, Server

MEMORY_BUDGET_BYTES = 200 * 1024 * 1024


def test_more_docs_than_the_limit_fail_the_run(
    client: TestClient, upstream: FakeUpstream, loaded: str
) -> None:
    upstream.fail(2, Fault("many_docs", size=6))

    run = ingest(client)

    assert_failed_untouched(run, loaded, "page 2: 6 docs, more than the limit of 5 asked for")
    assert run["pages_fetched"] == 1


def test_a_million_tiny_records_are_refused_before_parsing(
    client: TestClient, upstream: FakeUpstream, loaded: str
) -> None:
    upstream.fail(2, Fault("many_docs", size=1_000_000))

    run = ingest(client)

    assert_failed_untouched(
        run,
        loaded,
        "page 2: more than 100000 JSON values in one page (200 per record asked for, "
        "100000 at least)",
    )


@pytest.mark.parametrize("coding", ["gzip, gzip", "br", "gzip, identity, deflate"])
def test_stacked_or_unknown_content_codings_are_refused(
    client: TestClient, upstream: FakeUpstream, loaded: str, coding: str
) -> None:
    body = json.dumps(upstream.envelope(2, 5)).encode()
    upstream.fail(2, Fault("body", body=body, headers={"content-encoding": coding}))

    run = ingest(client)

    assert_failed_untouched(
        run,
        loaded,
        f"page 2: unsupported Content-Encoding {coding!r}: one of gzip or deflate, or none",
    )
    assert upstream.requests == [1, 2]


def test_a_gzip_bomb_stops_at_the_size_cap(
    client: TestClient, upstream: FakeUpstream, loaded: str
) -> None:
    bomb = gzip_bomb(256 << 20, layers=1)
    upstream.fail(2, Fault("body", body=bomb, headers={"content-encoding": "gzip"}))

    run = ingest(client)

    assert_failed_untouched(
        run,
        loaded,
        "page 2: response larger than INGEST_MAX_RESPONSE_BYTES (body passed 10000000 bytes)",
    )


@pytest.mark.parametrize("coding", ["gzip", "deflate", "identity"])
def test_a_compressed_page_is_decoded(
    client: TestClient, upstream: FakeUpstream, loaded: str, coding: str
) -> None:
    encode = {"gzip": gzip.compress, "deflate": zlib.compress}.get(coding, bytes)
    body = encode(json.dumps(upstream.envelope(2, 5)).encode())
    upstream.fail(2, Fault("body", body=body, headers={"content-encoding": coding}))

    run = ingest(client)

    assert (run["status"], run["rows_updated"]) == ("succeeded", 18), run["error"]


def test_a_trickling_page_fails_at_its_deadline(
    client: TestClient, upstream: FakeUpstream, loaded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "HTTP_PAGE_DEADLINE_SECONDS", 1.5)
    upstream.fail(2, Fault("trickle", seconds=0.1))  # each byte in time for the read timeout

    run = ingest(client)

    assert_failed_untouched(
        run, loaded, "page 2: no complete response within HTTP_PAGE_DEADLINE_SECONDS=1.5"
    )
    assert upstream.requests == [1, 2]


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "1e3", "soon", "-inf"])
def test_retry_after_that_is_no_delay_or_date_means_normal_backoff(
    client: TestClient, upstream: FakeUpstream, loaded: str, value: str
) -> None:
    upstream.fail(2, Fault("status", status=429, headers={"Retry-After": value}))

    run = ingest(client)

    assert run["status"] == "succeeded", run["error"]
    assert upstream.requests == [1, 2, 2, 3, 4]


def test_markup_in_a_content_type_is_plain_text_in_the_error(
    client: TestClient, upstream: FakeUpstream, loaded: str
) -> None:
    content_type = "text/[/]html[link=http://evil.test]x"
    upstream.fail(2, Fault("body", body=b"<p/>", headers={"content-type": content_type}))

    run = ingest(client)

    assert_failed_untouched(
        run,
        loaded,
        "page 2: expected a JSON response, got content type 'text/[/]html[link=http://evil.test]x'",
    )


def test_credentials_in_the_upstream_url_are_not_shown(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = upstream.url.removeprefix("http://")
    monkeypatch.setattr(settings, "SPACEX_API_URL", f"http://user:s3cret@{host}")

    run = ingest(client)

    assert run["source_url"] == f"http://***@{host}/v4/crew/query"
    assert "s3cret" not in json.dumps(client.get("/ingest").json())


# --- memory of the serving process -------------------------------------------------------


def peak_rss(pid: int) -> int:
    """VmHWM: the most resident memory the process ever had, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(name="server")
def server_fixture(upstream: FakeUpstream) -> Iterator[Server]:
    """The app in its own process with the default limits and the console log format."""
    server = Server(UVICORN, upstream.url, INGEST_PAGE_SIZE="5", LOG_FORMAT="console")
    yield server
    server.stop()


def finished_run(server: Server) -> dict[str, Any]:
    response = server.post("/ingest")
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    status = lambda: query_one("SELECT status FROM ingest_runs WHERE id = :id", id=run_id)[0]  # noqa: E731
    wait_until(lambda: status() not in ("queued", "running"), timeout=120)
    return dict(httpx.get(f"{server.url}/ingest/{run_id}").json())


def huge_string_page() -> bytes:
    """A page whose one record holds a 9.9 MB string of 4-byte characters (wide in Python)."""
    record = {"id": "a" * 24, "name": "\U0001f680" * (9_900_000 // 4), "status": "active"}
    # counted as the walk expects, with more to come: it is loaded, then page 3 finds nothing
    page = {"docs": [record], "totalDocs": 13, "hasNextPage": True}
    return json.dumps(page, ensure_ascii=False).encode()


HOSTILE_PAGES: dict[str, tuple[Callable[[], Fault], str]] = {
    "a million empty records": (
        lambda: Fault("many_docs", size=1_000_000),
        "page 2: more than 100000 JSON values",
    ),
    "empty records up to the size cap": (
        lambda: Fault("many_docs", size=3_300_000),
        "page 2: more than 100000 JSON values",
    ),
    "gzip bomb": (
        lambda: Fault("body", body=gzip_bomb(1 << 30, 1), headers={"content-encoding": "gzip"}),
        "page 2: response larger than INGEST_MAX_RESPONSE_BYTES",
    ),
    "stacked gzip bomb": (
        lambda: Fault(
            "body", body=gzip_bomb(1 << 30, 2), headers={"content-encoding": "gzip, gzip"}
        ),
        "page 2: unsupported Content-Encoding 'gzip, gzip'",
    ),
    "a 9.9 MB string of wide characters": (
        lambda: Fault("body", body=huge_string_page()),
        "listing incomplete: page 3 counts 0 members after id aaaaaaaaaaaaaaaaaaaaaaaa, 12 "
        "expected from page 2",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_PAGES))
def test_peak_memory_of_the_server_stays_in_budget(
    server: Server, upstream: FakeUpstream, case: str
) -> None:
    assert finished_run(server)["status"] == "succeeded"
    before = crew_checksum()
    make_fault, error = HOSTILE_PAGES[case]
    upstream.fail(2, make_fault())

    run = finished_run(server)

    peak = peak_rss(server.process.pid)
    print(f"{case}: peak RSS {peak / 2**20:.0f} MiB, run {run['status']}: {run['error']}")
    assert peak < MEMORY_BUDGET_BYTES
    assert run["status"] == "failed" and run["error"].startswith(error), run["error"]
    assert crew_checksum() == before


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_no_log_line_carries_the_body_or_its_records(
    client: TestClient,
    upstream: FakeUpstream,
    capsys: pytest.CaptureFixture[str],
    log_format: str,
) -> None:
    marker = "BODY-MARKER-7f3a"
    bad_json = ('{"docs": [{"name": "' + marker + '"}, ').encode()
    too_many = json.dumps({"docs": [{"name": marker}] * 6}).encode()
    upstream.fail(1, Fault("body", body=bad_json))
    upstream.fail(2, Fault("body", body=too_many))
    configure_logging("INFO", log_format)
    try:
        first, second = ingest(client), ingest(client)
    finally:
        configure_logging("INFO", "json")

    assert first["error"].startswith("page 1: invalid JSON")
    assert second["error"] == "page 2: 6 docs, more than the limit of 5 asked for"
    logged = capsys.readouterr().err
    assert logged.count("run failed") == 2
    assert marker not in logged
