"""The listing walk, the page deadline and the upstream address under attack: each test
reproduces a defect once found against the stand-in (or a server written here); its docstring
says how the code went wrong before the fix."""

import json
import random
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import Response

from app.config import Settings, settings
from app.ingest.extract import crew_query_url
from tests.conftest import ingest, query_one
from tests.fake_upstream import FakeUpstream, Fault, free_port, synthetic_crew
from tests.raw_server import raw_server


def deleted_ids() -> set[str]:
    row = query_one("SELECT coalesce(array_agg(id), '{}') FROM crew WHERE deleted_at IS NOT NULL")
    return set(row[0])


def active_count() -> int:
    return int(query_one("SELECT count(*) FROM crew WHERE deleted_at IS NULL")[0])


# --- the page deadline on a kept-alive connection ----------------------------------------------
@pytest.fixture(name="second_request_trickles")
def second_request_trickles_fixture() -> Iterator[tuple[str, list[bytes], list[int]]]:
    """An HTTP/1.1 server that keeps its connections alive: the first request is answered with a
    page of 2 (of 4) members, every later one with headers sent one byte every half second."""
    requests: list[bytes] = []
    envelope = {
        "docs": [synthetic_crew(0), synthetic_crew(1)],
        "totalDocs": 4,
        "limit": 2,
        "hasNextPage": True,
    }
    page = json.dumps(envelope).encode()
    first = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(page)
    ) + page
    trickle = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: a\r\n" * 4000

    def read_request(conn: socket.socket, buffer: bytes) -> tuple[bytes, bytes] | None:
        while b"\r\n\r\n" not in buffer:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n\r\n")
        found = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
        length = int(found.group(1)) if found else 0
        while len(rest) < length:
            rest += conn.recv(65536)
        return head, rest[length:]

    def serve(conn: socket.socket, stop: threading.Event) -> None:
        buffer = b""
        while not stop.is_set():
            got = read_request(conn, buffer)
            if got is None:
                return
            head, buffer = got
            requests.append(head)
            if len(requests) == 1:
                conn.sendall(first)
                continue
            for byte in trickle:
                if stop.wait(0.5):
                    return
                conn.sendall(bytes([byte]))

    with raw_server(serve) as (url, accepted):
        yield url, requests, accepted


def test_the_page_deadline_holds_on_a_kept_alive_connection(
    client: TestClient,
    second_request_trickles: tuple[str, list[bytes], list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Page 2 goes out on the connection page 1 opened: no `connect_tcp.complete` trace event
    fires for it, so the page's new SocketDeadline never learns its socket and cuts nothing."""
    url, requests, accepted = second_request_trickles
    monkeypatch.setattr(settings, "SPACEX_API_URL", url)
    monkeypatch.setattr(settings, "INGEST_PAGE_SIZE", 2)
    monkeypatch.setattr(settings, "HTTP_PAGE_DEADLINE_SECONDS", 2)
    monkeypatch.setattr(settings, "INGEST_RUN_TIMEOUT_SECONDS", 12)

    run = ingest(client)

    assert (len(requests), accepted[0]) == (2, 1)  # page 2 was asked on page 1's connection
    assert (run["status"], run["error"]) == (
        "failed",
        "page 2: no complete response within HTTP_PAGE_DEADLINE_SECONDS=2",
    )


# --- Retry-After longer than the time left ------------------------------------------------------
def test_a_retry_after_past_the_deadline_ends_the_page_whatever_the_backoff_cap(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue: a Retry-After longer than the time left ends the page at once. With the
    defaults (HTTP_BACKOFF_MAX_SECONDS=30 < HTTP_PAGE_DEADLINE_SECONDS=120) a Retry-After of 300
    is cut to 30 and the page is asked again long before the upstream said it may be."""
    monkeypatch.setattr(settings, "HTTP_PAGE_DEADLINE_SECONDS", 20)
    monkeypatch.setattr(settings, "HTTP_BACKOFF_MAX_SECONDS", 0.2)
    upstream.fail(1, Fault("status", status=503, headers={"Retry-After": "30"}))

    run = ingest(client)

    assert upstream.requests[:2] == [1], "page 1 was asked again before its Retry-After"
    assert (run["status"], run["error"]) == (
        "failed",
        "page 1: HTTP 503 after 1 attempt: upstream asked to retry after 30 s; "
        "page deadline leaves 20 s",
    )


# --- a listing whose counts are missing -----------------------------------------------------------
def test_a_listing_without_counts_is_not_proof_enough_to_delete(
    client: TestClient, upstream: FakeUpstream
) -> None:
    """A page without `totalDocs` is "taken on trust": a page 3 that says `hasNextPage: false`
    and sends no count ends the walk, and the 3 members of page 4, still upstream, are
    soft-deleted. The issue: when the listing is not provably complete, the run deletes
    nothing."""
    assert ingest(client)["status"] == "succeeded"
    page = upstream.envelope(3, 5)
    lying = {"docs": page["docs"], "limit": 5, "hasNextPage": False}
    upstream.fail(3, Fault("body", body=httpx.Response(200, json=lying).content))

    run = ingest(client)

    assert run["rows_deleted"] == 0, run
    assert active_count() == len(upstream.records)


# --- the real server's five-minute cache ----------------------------------------------------------
class CachingUpstream(FakeUpstream):
    """The stand-in behind r-spacex/SpaceX-API's cache middleware (middleware/cache.js): in
    production a 200 answer to `POST /v4/crew/query` is kept for 300 s under the request's
    method, URL and JSON body, and served again, byte for byte, to the same request. No time
    passes in these tests."""

    def __init__(self, records: Any = ()) -> None:
        super().__init__(records)
        self.cache: dict[tuple[str, bytes], bytes] = {}

    async def query_crew(self, request: Request) -> Response:
        key = (str(request.url), json.dumps(json.loads(await request.body() or b"{}")).encode())
        if key in self.cache:
            headers = {"spacex-api-cache": "HIT"}
            return Response(self.cache[key], headers=headers, media_type="application/json")
        response = await super().query_crew(request)
        if response.status_code == 200:
            self.cache[key] = bytes(response.body)
        return response


@pytest.fixture(name="caching")
def caching_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[CachingUpstream]:
    server = CachingUpstream()
    server.start()
    monkeypatch.setattr(settings, "SPACEX_API_URL", server.url)
    yield server
    server.stop()


def test_a_member_deleted_during_a_run_goes_with_the_next_consistent_run_behind_the_cache(
    client: TestClient, caching: CachingUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/explanation/extraction.md: "A member deleted upstream during a run is soft-deleted
    by the next run at the latest (the next run whose listing is consistent)". Behind the real
    server's cache the next run reads the same bodies and gets page 1 as it was before the
    delete; its listing is consistent, it succeeds, and the member stays active."""
    records = [synthetic_crew(i) for i in range(200)]
    random.Random(1).shuffle(records)
    caching.records = records
    monkeypatch.setattr(settings, "INGEST_PAGE_SIZE", 20)
    gone = f"{7:024x}"  # on page 1 of the walk by id
    served = [0]

    def delete_after_page_1(upstream: FakeUpstream) -> None:
        served[0] += 1
        if served[0] == 1:
            upstream.delete(gone)

    caching.between_requests = delete_after_page_1
    assert ingest(client)["status"] == "succeeded"
    caching.between_requests = None

    following = ingest(client)

    assert following["status"] == "succeeded", following["error"]
    assert gone in deleted_ids(), "deleted upstream during run 1, still active after run 2"


def test_a_member_present_throughout_is_not_deleted_behind_the_cache(
    client: TestClient, caching: CachingUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guarantee "a member present upstream for the whole run is never soft-deleted by it"
    does not hold behind the real server's cache: pages cached (by the same URL and body) before
    a member was inserted are served to a later run, consistently, without it. Here the body
    changes back when INGEST_PAGE_SIZE is set back after a run with another size."""
    caching.records = [synthetic_crew(i) for i in range(10) if i != 5]
    monkeypatch.setattr(settings, "INGEST_PAGE_SIZE", 4)
    assert ingest(client)["status"] == "succeeded"  # its pages are now cached
    caching.insert(synthetic_crew(5))
    monkeypatch.setattr(settings, "INGEST_PAGE_SIZE", 3)
    assert ingest(client)["rows_inserted"] == 1  # member 5 read, fresh
    monkeypatch.setattr(settings, "INGEST_PAGE_SIZE", 4)

    run = ingest(client)  # member 5 is upstream for the whole of this run

    assert f"{5:024x}" not in deleted_ids(), run


# --- secrets in SPACEX_API_URL ------------------------------------------------------------------
def test_a_password_with_a_reserved_character_stays_out_of_the_run_error(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password pasted with a `/` (or `?`, `#`) unencoded makes the URL unparseable; httpx's
    InvalidURL message quotes what it took for the port, the password's first part, and
    describe() copies it into the run's error (stored, served, logged)."""
    monkeypatch.setattr(settings, "SPACEX_API_URL", "https://apikey:s3cr/et@proxy.example")

    run = ingest(client)

    assert run["status"] == "failed"
    assert "s3cr" not in run["error"], run["error"]


@pytest.mark.parametrize(
    "shape", ["http://s3cret-token@{host}", "http://{host}/?s3cret-token"], ids=["user", "bare"]
)
def test_a_token_in_the_url_is_redacted_whatever_its_place(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    """redacted() hides a password and query-string values only: a token given as the user
    name (`https://TOKEN@host`, a common form) or as a bare query string is shown in full in
    the run's source_url, the logs and the status page."""
    host = upstream.url.removeprefix("http://")
    monkeypatch.setattr(settings, "SPACEX_API_URL", shape.format(host=host))

    run = ingest(client)

    assert "s3cret-token" not in run["source_url"], run["source_url"]


# --- SPACEX_API_URL kept as written ---------------------------------------------------------------
def test_a_query_value_ending_in_a_slash_is_kept(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings strips trailing slashes from the whole URL, so a query value that ends in `/`
    (a base64 signature pasted unencoded) loses it and the proxy gets the wrong key."""
    written = f"{upstream.url}/spacex/?sig=ab/"
    monkeypatch.setattr(settings, "SPACEX_API_URL", Settings(SPACEX_API_URL=written).SPACEX_API_URL)

    assert ingest(client)["status"] == "succeeded"
    assert set(upstream.request_urls) == {f"{upstream.url}/spacex/v4/crew/query?sig=ab/"}


def test_an_encoded_slash_in_the_path_prefix_is_kept() -> None:
    """crew_query_url rebuilds the path from the decoded `path`, so `%2F` in a prefix becomes a
    real `/` and the request goes to another path."""
    assert crew_query_url("https://proxy.example/a%2Fb") == (
        "https://proxy.example/a%2Fb/v4/crew/query"
    )


# --- reasons and bounds ---------------------------------------------------------------------
def test_a_page_given_up_for_time_still_names_its_transport_cause(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the next backoff would pass the page deadline, describe() returns only
    `attempts.gave_up` for anything but an HTTP status: "connection refused" (the reason an
    operator needs) is dropped for "no complete response within ... (the next retry would wait
    past it)"."""
    monkeypatch.setattr(settings, "SPACEX_API_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(settings, "HTTP_PAGE_DEADLINE_SECONDS", 2)
    monkeypatch.setattr(settings, "HTTP_BACKOFF_INITIAL_SECONDS", 1)

    run = ingest(client)

    assert run["status"] == "failed"
    assert "ConnectError" in run["error"], run["error"]


def test_a_valid_member_with_many_launches_loads_at_any_page_size(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_envelope bounds a page by MAX_VALUES_PER_RECORD (200) JSON values per record asked
    for, while the model puts no bound on `launches`: at INGEST_PAGE_SIZE=1 a valid member with
    250 launches fails the whole run ("more than 200 JSON values in one page"), though it loads
    at page size 100. The page size, a paging parameter, decides whether a valid record loads."""
    veteran = synthetic_crew(1) | {"launches": [f"{i:024x}" for i in range(250)]}
    upstream.records = [synthetic_crew(0), veteran, synthetic_crew(2)]
    monkeypatch.setattr(settings, "INGEST_PAGE_SIZE", 1)

    run = ingest(client)

    assert (run["status"], run["records_valid"]) == ("succeeded", 3), run["error"]


def test_a_page_deadline_that_is_not_finite_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="HTTP_PAGE_DEADLINE_SECONDS"):
        Settings(HTTP_PAGE_DEADLINE_SECONDS="inf")


@pytest.mark.parametrize("seconds", ["1e10", "1e15"])
def test_a_page_deadline_past_the_timer_range_arms_no_crashing_thread(
    client: TestClient,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    seconds: str,
) -> None:
    """Settings accepts any HTTP_PAGE_DEADLINE_SECONDS > 0, `inf` included (an operator's "no
    page deadline"). SocketDeadline.armed starts a threading.Timer for it, whose wait overflows
    past threading.TIMEOUT_MAX (~9.2e9 s): each page's timer thread dies with an OverflowError
    traceback on stderr (not a JSON log line) and the cut is silently gone."""
    crashed: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(repr(args.exc_value)))
    deadline = Settings(HTTP_PAGE_DEADLINE_SECONDS=seconds).HTTP_PAGE_DEADLINE_SECONDS
    monkeypatch.setattr(settings, "HTTP_PAGE_DEADLINE_SECONDS", deadline)

    run = ingest(client)

    assert run["status"] == "succeeded", run["error"]
    assert crashed == []


def test_an_inconsistent_listing_is_not_logged_as_a_wrong_url(
    client: TestClient, upstream: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every ExtractError gets UPSTREAM_HINT in the "run failed" log line, so a listing that
    moved while it was read (the next run reads it again; nothing to fix) tells the operator to
    "check that SPACEX_API_URL is right and reachable from here"."""
    assert ingest(client)["status"] == "succeeded"
    upstream.fail(2, Fault("skip_page"))
    capsys.readouterr()

    run = ingest(client)

    assert run["error"].startswith("listing incomplete"), run["error"]
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if "{" in line]
    failed = next(line for line in lines if line.get("event") == "run failed")
    assert "SPACEX_API_URL is right" not in (failed.get("hint") or ""), failed["hint"]
