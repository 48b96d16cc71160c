"""Upstream faults over real HTTP: each ends in a truthful run and leaves the crew table intact.

Every test first loads the real snapshot, then changes the upstream data so that a run which
wrongly committed would change the table's checksum.
"""

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import settings
from tests.conftest import crew_checksum, ingest
from tests.fake_upstream import FakeUpstream, Fault


@pytest.fixture(name="loaded")
def loaded_fixture(client: TestClient, upstream: FakeUpstream) -> str:
    """The snapshot loaded once; the upstream then serves renamed records. Returns the checksum."""
    assert ingest(client)["status"] == "succeeded"
    upstream.records = [{**r, "name": r["name"] + " Jr."} for r in upstream.records]
    upstream.requests.clear()
    return crew_checksum()


def assert_failed_untouched(run: dict[str, Any], checksum: str, error: str) -> None:
    assert run["status"] == "failed"
    assert run["error"] == error or run["error"].startswith(error), run["error"]
    assert (run["rows_inserted"], run["rows_updated"], run["rows_deleted"]) == (0, 0, 0)
    assert crew_checksum() == checksum


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_on_some_pages_are_retried(
    client: TestClient, upstream: FakeUpstream, loaded: str, status: int
) -> None:
    upstream.fail(2, Fault("status", status=status), Fault("status", status=status))
    upstream.fail(4, Fault("status", status=status))

    run = ingest(client)

    assert run["status"] == "succeeded", run["error"]
    assert (run["pages_fetched"], run["records_fetched"], run["rows_updated"]) == (4, 18, 18)
    assert upstream.requests == [1, 2, 2, 2, 3, 4, 4]


def test_retry_exhaustion_fails_the_run_and_keeps_the_table(
    client: TestClient, upstream: FakeUpstream, loaded: str
) -> None:
    upstream.fail(3, *[Fault("status", status=503)] * 3)

    run = ingest(client)

    assert_failed_untouched(run, loaded, "page 3: HTTP 503 after 3 attempts")
    assert run["pages_fetched"] == 2


def test_429_waits_as_retry_after_says(
    client: TestClient, upstream: FakeUpstream, loaded: str
) -> None:
    upstream.fail(2, Fault("status", status=429, headers={"Retry-After": "0.3"}))

    started = time.monotonic()
    run = ingest(client)

    assert run["status"] == "succeeded"
    assert time.monotonic() - started >= 0.3
    assert upstream.requests == [1, 2, 2, 3, 4]


def test_retry_after_is_capped_by_backoff_max(
    client: TestClient, upstream: FakeUpstream, loaded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "HTTP_BACKOFF_MAX_SECONDS", 0.2)
    upstream.fail(1, Fault("status", status=429, headers={"Retry-After": "100"}))

    started = time.monotonic()
    run = ingest(client)

    assert run["status"] == "succeeded"
    assert time.monotonic() - started < 60  # the 100 s Retry-After (within the page deadline)
    # was cut to HTTP_BACKOFF_MAX_SECONDS; one past the deadline ends the page (test_listing)


def test_slow_responses_time_out_then_fail(
    client: TestClient, upstream: FakeUpstream, loaded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "HTTP_TIMEOUT_SECONDS", 0.2)
    upstream.fail(2, *[Fault("slow", seconds=0.6)] * 3)

    run = ingest(client)

    assert_failed_untouched(run, loaded, "page 2: timeout after 3 attempts")


def test_one_slow_response_is_retried(
    client: TestClient, upstream: FakeUpstream, loaded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "HTTP_TIMEOUT_SECONDS", 0.2)
    upstream.fail(2, Fault("slow", seconds=0.6))

    assert ingest(client)["status"] == "succeeded"


def test_connection_reset_mid_body_is_retried(
    client: TestClient, upstream: FakeUpstream, loaded: str
) -> None:
    upstream.fail(2, Fault("reset"))

    assert ingest(client)["status"] == "succeeded"
    assert upstream.requests.count(2) == 2


def test_connection_resets_until_the_last_attempt_fail_the_run(
    client: TestClient, upstream: FakeUpstream, loaded: str
) -> None:
    upstream.fail(2, *[Fault("reset")] * 3)

    run = ingest(client)

    assert_failed_untouched(run, loaded, "page 2: RemoteProtocolError after 3 attempts")


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("truncated", "page 2: invalid JSON"),
        ("not_json", "page 2: invalid JSON"),
        ("html", "page 2: expected a JSON response, got content type 'text/html"),
        ("no_docs", "page 2: envelope is missing 'docs'"),
        ("docs_not_list", "page 2: 'docs' is not a list but dict"),
        ("repeat_page", "page 2 repeats members already listed (id 5ebf1a6e23a9a60006e03a7a"),
    ],
)
def test_malformed_pages_fail_the_run_without_retry(
    client: TestClient, upstream: FakeUpstream, loaded: str, fault: str, error: str
) -> None:
    upstream.fail(2, Fault(fault))

    run = ingest(client)

    assert_failed_untouched(run, loaded, error)
    assert upstream.requests == [1, 2]


def test_never_ending_pagination_stops_at_the_page_cap(
    client: TestClient, upstream: FakeUpstream, loaded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "INGEST_MAX_PAGES", 6)
    upstream.never_ending = True

    run = ingest(client)

    assert_failed_untouched(
        run, loaded, "page 7: page cap reached, more than INGEST_MAX_PAGES=6 pages"
    )
    assert upstream.requests == [1, 2, 3, 4, 5, 6]


def test_streamed_body_over_the_size_cap_is_cut_off(
    client: TestClient, upstream: FakeUpstream, loaded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "INGEST_MAX_RESPONSE_BYTES", 200_000)
    upstream.fail(2, Fault("oversized", size=5_000_000))

    run = ingest(client)

    assert_failed_untouched(
        run, loaded, "page 2: response larger than INGEST_MAX_RESPONSE_BYTES (body passed 200000"
    )


def test_declared_content_length_over_the_cap_is_refused(
    client: TestClient, upstream: FakeUpstream, loaded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "INGEST_MAX_RESPONSE_BYTES", 500)

    run = ingest(client)

    assert_failed_untouched(
        run, loaded, "page 1: response larger than INGEST_MAX_RESPONSE_BYTES (Content-Length"
    )


def test_upstream_suddenly_empty_deletes_nothing(
    client: TestClient, upstream: FakeUpstream, loaded: str
) -> None:
    upstream.fail(1, Fault("empty"))

    run = ingest(client)

    assert_failed_untouched(
        run,
        loaded,
        "refusing to soft-delete 18 of 18 active crew "
        "(more than INGEST_MAX_DELETE_FRACTION=0.5); "
        "trigger the run with allow_mass_delete=true to accept",
    )


def test_more_than_the_delete_fraction_is_refused(
    client: TestClient, upstream: FakeUpstream, loaded: str
) -> None:
    upstream.records = upstream.records[:8]

    run = ingest(client)

    assert_failed_untouched(run, loaded, "refusing to soft-delete 10 of 18 active crew")


def test_mass_delete_goes_through_when_allowed_for_the_run(
    client: TestClient, upstream: FakeUpstream, loaded: str
) -> None:
    upstream.fail(1, Fault("empty"))

    run = ingest(client, allow_mass_delete="true")

    assert (run["status"], run["rows_deleted"]) == ("succeeded", 18)
    assert client.get("/crew").json()["total"] == 0
    assert client.get("/crew?include_deleted=true").json()["total"] == 18


HOSTILE_RECORDS: list[Any] = [
    None,
    17,
    "string item",
    ["list", "item"],
    {},
    {"id": 5, "name": "Wrong id type", "status": "active"},
    {"id": "0123456789abcdef0123456g", "name": "Bad hex", "status": "active"},
    {"id": "aaaaaaaaaaaaaaaaaaaaaaa1", "name": None, "status": "active"},
    {"id": "aaaaaaaaaaaaaaaaaaaaaaa2", "name": "N" * 100_000, "status": "active"},
    {"id": "aaaaaaaaaaaaaaaaaaaaaaa3", "name": "Status", "status": "on the moon"},
    {"id": "aaaaaaaaaaaaaaaaaaaaaaa4", "name": "Url", "status": "active", "image": "javascript:x"},
    {"id": "aaaaaaaaaaaaaaaaaaaaaaa5", "name": "Nul\u0000", "status": "active"},
    {"id": "aaaaaaaaaaaaaaaaaaaaaaa6", "name": "Launches", "status": "active", "launches": [1]},
    {"id": "aaaaaaaaaaaaaaaaaaaaaaa7", "name": "Agency", "status": "active", "agency": ["NASA"]},
]


def test_hostile_records_are_rejected_and_the_rest_loaded(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On one page: records without an id the upstream could sort by cannot be walked past."""
    upstream.records = upstream.records + HOSTILE_RECORDS
    monkeypatch.setattr(settings, "INGEST_PAGE_SIZE", 50)

    run = ingest(client)

    assert run["status"] == "succeeded", run["error"]
    assert (run["records_fetched"], run["records_valid"]) == (32, 18)
    assert (run["records_rejected"], run["rows_inserted"]) == (14, 18)
    rejects = client.get(f"/ingest/{run['id']}/rejects").json()["items"]
    assert len(rejects) == 14 and all(reject["errors"] for reject in rejects)
    assert rejects[0]["raw"] is None and rejects[2]["raw"] == "string item"
    assert rejects[11]["raw"]["name"] == "Nul\ufffd"  # jsonb cannot hold U+0000


def test_an_id_repeated_on_a_later_page_is_rejected_with_its_record(
    client: TestClient, upstream: FakeUpstream
) -> None:
    original = upstream.records[0]
    impostor = {**original, "name": "Impostor"}
    upstream.records = [*upstream.records, impostor]  # lands on page 4 of 4

    run = ingest(client)

    assert (run["status"], run["records_rejected"], run["rows_inserted"]) == ("succeeded", 1, 18)
    assert run["records_valid"] == 18
    reject = client.get(f"/ingest/{run['id']}/rejects").json()["items"][0]
    assert (reject["raw"], reject["errors"][0]["type"]) == (impostor, "duplicate_id")
    assert client.get(f"/crew/{original['id']}").json()["name"] == original["name"]
