"""A run deletes only what the upstream really dropped: the listing walked by id against a stand-in
that pages as the real server does, while a concurrent writer changes it between two pages.

The stand-in's conformance to the real server (mongoose-paginate-v2 1.7.0 under
r-spacex/SpaceX-API's `POST /v4/crew/query`) is checked first, so that what the runs below meet is
what production does."""

import random
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import settings
from tests.conftest import crew_checksum, ingest, query_one
from tests.fake_upstream import FakeUpstream, Fault, synthetic_crew
from tests.raw_server import raw_server


def query(upstream: FakeUpstream, body: Any) -> httpx.Response:
    return httpx.post(f"{upstream.url}/v4/crew/query", json=body)


@pytest.fixture(name="stand_in")
def stand_in_fixture() -> Iterator[FakeUpstream]:
    """Five members whose natural (insertion) order is not their id order."""
    server = FakeUpstream([synthetic_crew(i) for i in (3, 1, 4, 0, 2)]).start()
    yield server
    server.stop()


# --- the stand-in behaves as the real server -----------------------------------------------------
def test_the_envelope_has_the_real_servers_keys_in_its_order(stand_in: FakeUpstream) -> None:
    without_page = query(stand_in, {"options": {"limit": 2}}).json()
    with_page = query(stand_in, {"options": {"limit": 2, "page": 2}}).json()

    assert list(without_page) == [
        "docs", "totalDocs", "offset", "limit", "totalPages", "page", "pagingCounter",
        "hasPrevPage", "hasNextPage", "prevPage", "nextPage",
    ]  # fmt: skip
    assert "offset" not in with_page  # only when `page` was not sent
    assert {k: v for k, v in with_page.items() if k != "docs"} == {
        "totalDocs": 5, "limit": 2, "totalPages": 3, "page": 2, "pagingCounter": 3,
        "hasPrevPage": True, "hasNextPage": True, "prevPage": 1, "nextPage": 3,
    }  # fmt: skip


def test_without_sort_pages_follow_natural_order(stand_in: FakeUpstream) -> None:
    page = query(stand_in, {"options": {"limit": 3}}).json()

    assert [d["id"] for d in page["docs"]] == [f"{i:024x}" for i in (3, 1, 4)]


def test_an_id_filter_with_a_sort_is_a_keyset_page(stand_in: FakeUpstream) -> None:
    body = {"query": {"_id": {"$gt": f"{1:024x}"}}, "options": {"sort": {"_id": 1}, "limit": 2}}

    page = query(stand_in, body).json()

    assert [d["id"] for d in page["docs"]] == [f"{2:024x}", f"{3:024x}"]
    assert (page["totalDocs"], page["hasNextPage"]) == (3, True)


@pytest.mark.parametrize("limit", [0, -1, "ten"])
def test_a_limit_that_is_not_a_positive_number_gives_no_docs(
    stand_in: FakeUpstream, limit: Any
) -> None:
    page = query(stand_in, {"options": {"limit": limit}}).json()

    assert (page["docs"], page["totalDocs"], page["hasNextPage"]) == ([], 5, False)


def test_page_below_one_is_clamped_and_past_the_end_is_empty(stand_in: FakeUpstream) -> None:
    clamped = query(stand_in, {"options": {"limit": 2, "page": -3}}).json()
    past = query(stand_in, {"options": {"limit": 2, "page": 9}}).json()

    assert (clamped["page"], len(clamped["docs"])) == (1, 2)
    assert (past["docs"], past["hasNextPage"]) == ([], False)


def test_pagination_false_returns_every_document(stand_in: FakeUpstream) -> None:
    page = query(stand_in, {"options": {"pagination": False}}).json()

    assert (len(page["docs"]), page["hasNextPage"]) == (5, False)


def test_pages_carry_an_etag_and_a_five_minute_cache(stand_in: FakeUpstream) -> None:
    first, again = (query(stand_in, {"options": {"limit": 2}}) for _ in range(2))

    assert first.headers["cache-control"] == "max-age=300"
    assert first.headers["etag"] == again.headers["etag"] and first.content == again.content


def test_errors_are_plain_text(stand_in: FakeUpstream) -> None:
    bad = httpx.post(f"{stand_in.url}/v4/crew/query", content=b"{", headers={"content-type": "x"})
    unknown = httpx.get(f"{stand_in.url}/v4/nothing")

    assert bad.status_code == 400 and bad.headers["content-type"].startswith("text/plain")
    assert (unknown.status_code, unknown.text) == (404, "Not Found")
    assert unknown.headers["content-type"].startswith("text/plain")


# --- the defects found, each with its reproducer -------------------------------------------------
def shuffled_members(count: int, seed: int) -> list[dict[str, Any]]:
    records = [synthetic_crew(i) for i in range(count)]
    random.Random(seed).shuffle(records)  # natural order: not id order
    return records


def after_request(number: int, write: Callable[[FakeUpstream], None]) -> Callable[..., None]:
    """A concurrent writer that acts once, right after request `number` was answered."""
    seen = [0]

    def writer(upstream: FakeUpstream) -> None:
        seen[0] += 1
        if seen[0] == number:
            write(upstream)

    return writer


def active_ids() -> set[str]:
    return set(active_names())


def deleted_ids() -> set[str]:
    row = query_one("SELECT coalesce(array_agg(id), '{}') FROM crew WHERE deleted_at IS NOT NULL")
    return set(row[0])


def active_names() -> dict[str, str]:
    sql = "SELECT coalesce(jsonb_object_agg(id, name), '{}') FROM crew WHERE deleted_at IS NULL"
    return dict(query_one(sql)[0])


def test_a_delete_between_two_pages_deletes_no_member_still_upstream(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.records = shuffled_members(200, seed=1)
    monkeypatch.setattr(settings, "INGEST_PAGE_SIZE", 20)
    assert ingest(client)["status"] == "succeeded"
    gone = f"{7:024x}"  # on page 1 of the walk by id
    upstream.between_requests = after_request(1, lambda u: u.delete(gone))

    run = ingest(client)

    assert (run["status"], run["rows_deleted"]) == ("succeeded", 0), run["error"]
    assert len(active_ids()) == 200  # read before it went: it goes with the next run
    upstream.between_requests = None
    assert ingest(client)["rows_deleted"] == 1
    assert active_ids() == {r["id"] for r in upstream.records}
    assert query_one("SELECT count(*) FROM crew_versions WHERE op = 'restore'")[0] == 0


def test_a_skipped_page_fails_the_run_and_deletes_nothing(
    client: TestClient, upstream: FakeUpstream
) -> None:
    assert ingest(client)["status"] == "succeeded"
    before = crew_checksum()
    upstream.fail(2, Fault("skip_page"))

    run = ingest(client)

    assert run["status"] == "failed"
    assert run["error"].startswith(
        "listing incomplete: page 3 counts 3 members after id 607a3ab45a906a44023e0872, 8 "
        "expected from page 2 (members were skipped"
    )
    assert crew_checksum() == before


def test_a_repeated_page_fails_the_run_without_rejects_or_deletes(
    client: TestClient, upstream: FakeUpstream
) -> None:
    assert ingest(client)["status"] == "succeeded"
    before = crew_checksum()
    upstream.fail(2, Fault("repeat_page"))

    run = ingest(client)

    assert run["status"] == "failed"
    assert run["error"].startswith("page 2 repeats members already listed")
    assert (run["records_rejected"], crew_checksum()) == (0, before)
    assert query_one("SELECT count(*) FROM ingest_rejects")[0] == 0


def test_a_last_page_short_of_its_count_deletes_nothing(
    client: TestClient, upstream: FakeUpstream
) -> None:
    assert ingest(client)["status"] == "succeeded"
    before = crew_checksum()
    last = upstream.envelope(4, 5)
    short = {**last, "docs": last["docs"][:2]}  # counts 3, lists 2
    upstream.fail(4, Fault("body", body=httpx.Response(200, json=short).content))

    run = ingest(client)

    assert run["status"] == "failed"
    assert run["error"].startswith(
        "listing incomplete: page 4 is the last, with 2 members, but the upstream counts 3"
    )
    assert crew_checksum() == before


def test_a_base_url_with_a_path_prefix_and_a_query_string(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "SPACEX_API_URL", f"{upstream.url}/spacex/?key=abc")

    run = ingest(client)

    assert run["status"] == "succeeded", run["error"]
    assert run["source_url"] == f"{upstream.url}/spacex/v4/crew/query?key=***"
    assert set(upstream.request_urls) == {f"{upstream.url}/spacex/v4/crew/query?key=abc"}


def trickle_headers(conn: socket.socket, stop: threading.Event) -> None:
    """Answer with a status line sent one byte a second."""
    conn.recv(65536)
    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n":
        if stop.wait(1):
            return
        conn.sendall(bytes([byte]))


@pytest.fixture(name="trickling_headers")
def trickling_headers_fixture() -> Iterator[str]:
    with raw_server(trickle_headers) as (url, _):
        yield url


def test_the_page_deadline_holds_while_headers_trickle(
    client: TestClient, trickling_headers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "SPACEX_API_URL", trickling_headers)
    monkeypatch.setattr(settings, "HTTP_PAGE_DEADLINE_SECONDS", 2)
    monkeypatch.setattr(settings, "INGEST_RUN_TIMEOUT_SECONDS", 40)

    run = ingest(client)

    assert (run["status"], run["error"]) == (
        "failed",
        "page 1: no complete response within HTTP_PAGE_DEADLINE_SECONDS=2",
    )


def test_a_retry_after_past_the_deadline_ends_the_page_at_once(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "HTTP_PAGE_DEADLINE_SECONDS", 4)
    monkeypatch.setattr(settings, "HTTP_BACKOFF_MAX_SECONDS", 60)
    upstream.fail(1, Fault("status", status=503, headers={"Retry-After": "30"}))

    run = ingest(client)

    assert (run["status"], run["error"]) == (
        "failed",
        "page 1: HTTP 503 after 1 attempt: upstream asked to retry after 30 s; "
        "page deadline leaves 4 s",
    )
    assert upstream.requests == [1]


@pytest.mark.parametrize("status", [301, 307])
def test_a_redirect_is_named_not_followed(
    client: TestClient, upstream: FakeUpstream, status: int
) -> None:
    location = "https://elsewhere.test/v4/crew/query?token=s3cret"
    upstream.fail(1, Fault("redirect", status=status, headers={"location": location}))

    run = ingest(client)

    assert (run["status"], run["error"]) == (
        "failed",
        f"page 1: HTTP {status} redirect not followed (Location: "
        "https://elsewhere.test/v4/crew/query?token=***); set SPACEX_API_URL to where it points "
        "if that is the API",
    )


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        (Fault("challenge"), "page 1: HTTP 403 Forbidden: a CDN challenge page (cf-mitigated"),
        (
            Fault("body", body=b"<html>oops</html>", headers={"content-type": "text/html"}),
            "page 1: expected a JSON response, got content type 'text/html'",
        ),
        (
            Fault(
                "status", status=400, body=b'Cast to ObjectId failed for value "x" at path "_id"'
            ),
            'page 1: HTTP 400 Bad Request (Cast to ObjectId failed for value "x" at path "_id")',
        ),
        (Fault("status", status=404), "page 1: HTTP 404 Not Found"),
    ],
)
def test_error_pages_say_what_answered(
    client: TestClient, upstream: FakeUpstream, fault: Fault, says: str
) -> None:
    upstream.fail(1, fault)

    run = ingest(client)

    assert run["status"] == "failed" and run["error"].startswith(says), run["error"]


def test_an_html_error_page_says_it_is_not_the_api(
    client: TestClient, upstream: FakeUpstream
) -> None:
    upstream.fail(1, *[Fault("html_error", status=502)] * 3)

    run = ingest(client)

    assert run["error"].startswith("page 1: HTTP 502 after 3 attempts: an HTML page, not the API")


# --- many runs, random concurrent writes ---------------------------------------------------------
def random_member(rng: random.Random, version: int = 0) -> dict[str, Any]:
    return synthetic_crew(rng.randrange(16**6), version) | {"id": f"{rng.getrandbits(96):024x}"}


def test_random_concurrent_writes_never_delete_a_member_present_throughout(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs with writes between their pages may fail (the listing moved under them) but never
    soft-delete a member that was upstream all along nor reject a valid record; a run with no
    writes then converges to the upstream exactly."""
    rng = random.Random(23)
    monkeypatch.setattr(settings, "INGEST_MAX_DELETE_FRACTION", 1.0)
    upstream.records = [random_member(rng) for _ in range(60)]
    assert ingest(client)["status"] == "succeeded"
    outcomes = []
    for _ in range(24):
        monkeypatch.setattr(settings, "INGEST_PAGE_SIZE", rng.choice([1, 2, 3, 7, 20, 100]))
        throughout = {r["id"] for r in upstream.records}

        def write(up: FakeUpstream, throughout: set[str] = throughout) -> None:
            for _ in range(rng.randrange(3)):
                action = rng.choice(["delete", "insert", "update"])
                if action == "delete" and up.records:
                    up.delete(rng.choice(up.records)["id"])
                elif action == "insert":
                    up.insert(random_member(rng), rng.randrange(len(up.records) + 1))
                elif up.records:
                    up.update(random_member(rng, 1) | {"id": rng.choice(up.records)["id"]})
            throughout.intersection_update(r["id"] for r in up.records)

        upstream.between_requests = write
        run = ingest(client)
        outcomes.append(run["status"])
        assert run["records_rejected"] == 0, run
        assert not throughout & deleted_ids(), run
        upstream.between_requests = None
        quiet = ingest(client)
        assert quiet["status"] == "succeeded", quiet["error"]
        assert active_names() == {r["id"]: r["name"] for r in upstream.records}
    assert "succeeded" in outcomes and "failed" in outcomes  # both paths were walked
