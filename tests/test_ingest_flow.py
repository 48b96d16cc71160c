"""End to end through the API: fixture ingest, re-ingest, change/vanish/new, upstream mocked."""

import copy
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pytest_httpx import HTTPXMock

from app.config import settings
from app.ingest.extract import USER_AGENT
from tests.conftest import crew_checksum, ingest, query_one

QUERY_URL = f"{settings.SPACEX_API_URL}/v4/crew/query"
pytestmark = pytest.mark.httpx_mock(should_mock=lambda request: request.url.host != "testserver")


def envelope(
    docs: list[Any], page: int = 1, has_next: bool = False, total: int | None = None
) -> dict[str, Any]:
    """A page as the upstream answers a keyset request: `totalDocs` counts this page and after."""
    return {
        "docs": docs,
        "totalDocs": len(docs) if total is None else total,
        "page": page,
        "hasNextPage": has_next,
        "nextPage": page + 1 if has_next else None,
    }


def serve_once(httpx_mock: HTTPXMock, records: list[Any]) -> None:
    httpx_mock.add_response(method="POST", url=QUERY_URL, json=envelope(records))


def test_full_ingest_loads_every_fixture_record(
    client: TestClient, httpx_mock: HTTPXMock, crew_records: list[dict[str, Any]]
) -> None:
    serve_once(httpx_mock, crew_records)

    run = ingest(client)

    assert run["status"] == "succeeded", run["error"]
    assert run["trigger"] == "api"
    assert run["source_url"] == QUERY_URL
    assert {k: run[k] for k in COUNT_FIELDS} == {
        "pages_fetched": 1,
        "records_fetched": 18,
        "records_valid": 18,
        "records_rejected": 0,
        "rows_inserted": 18,
        "rows_updated": 0,
        "rows_unchanged": 0,
        "rows_deleted": 0,
    }
    assert run["error"] is None
    assert run["schema_drift"] == {"unknown_fields": {}, "missing_fields": {}}
    assert run["started_at"] <= run["finished_at"]
    assert query_one("SELECT count(*) FROM crew")[0] == 18
    request = httpx_mock.get_requests()[0]
    body = json.loads(request.content)
    assert body == {
        "query": {},
        "options": {"sort": {"_id": 1}, "limit": 100, "walk": body["options"]["walk"]},
    }
    assert request.headers["user-agent"] == USER_AGENT


def test_agency_filter_returns_exactly_the_fixture_nasa_members(
    client: TestClient, httpx_mock: HTTPXMock, crew_records: list[dict[str, Any]]
) -> None:
    serve_once(httpx_mock, crew_records)
    ingest(client)

    body = client.get("/crew", params={"agency": "NASA"}).json()

    expected = sorted(r["name"] for r in crew_records if r["agency"] == "NASA")
    assert [member["name"] for member in body["items"]] == expected
    assert (body["total"], body["limit"], body["offset"]) == (10, 100, 0)
    behnken = next(r for r in crew_records if r["name"] == "Robert Behnken")
    served = next(m for m in body["items"] if m["id"] == behnken["id"])
    assert {k: served[k] for k in behnken} == behnken
    assert served["deleted_at"] is None


def test_second_ingest_of_same_data_writes_nothing(
    client: TestClient, httpx_mock: HTTPXMock, crew_records: list[dict[str, Any]]
) -> None:
    serve_once(httpx_mock, crew_records)
    serve_once(httpx_mock, crew_records)
    ingest(client)
    before = crew_checksum()

    run = ingest(client)

    assert run["status"] == "succeeded"
    assert (run["rows_inserted"], run["rows_updated"], run["rows_deleted"]) == (0, 0, 0)
    assert run["rows_unchanged"] == 18
    assert crew_checksum() == before  # updated_at not bumped either


def test_changed_vanished_and_new_members_are_counted(
    client: TestClient, httpx_mock: HTTPXMock, crew_records: list[dict[str, Any]]
) -> None:
    serve_once(httpx_mock, crew_records)
    ingest(client)
    changed = copy.deepcopy(crew_records)
    changed[0]["status"] = "retired"
    vanished = changed.pop(1)
    newcomer = {**changed[2], "id": "aaaaaaaaaaaaaaaaaaaaaaaa", "name": "New Member"}
    serve_once(httpx_mock, [*changed, newcomer])

    run = ingest(client)

    counts = (run["rows_inserted"], run["rows_updated"], run["rows_deleted"], run["rows_unchanged"])
    assert counts == (1, 1, 1, 16)
    assert client.get(f"/crew/{changed[0]['id']}").json()["status"] == "retired"
    gone = client.get(f"/crew/{vanished['id']}").json()
    assert gone["deleted_at"] is not None
    assert vanished["id"] not in {m["id"] for m in client.get("/crew").json()["items"]}
    listed = client.get("/crew", params={"include_deleted": True}).json()
    assert listed["total"] == 19


def test_soft_deleted_member_that_returns_is_restored(
    client: TestClient, httpx_mock: HTTPXMock, crew_records: list[dict[str, Any]]
) -> None:
    serve_once(httpx_mock, crew_records)
    serve_once(httpx_mock, crew_records[1:])
    serve_once(httpx_mock, crew_records)
    ingest(client)
    ingest(client)

    run = ingest(client)

    assert (run["rows_updated"], run["rows_inserted"], run["rows_deleted"]) == (1, 0, 0)
    assert client.get(f"/crew/{crew_records[0]['id']}").json()["deleted_at"] is None


def test_unknown_and_missing_fields_are_schema_drift_not_rejects(
    client: TestClient, httpx_mock: HTTPXMock, crew_records: list[dict[str, Any]]
) -> None:
    records = copy.deepcopy(crew_records[:3])
    records[0]["nickname"] = "Bob"
    records[1]["nickname"] = "Doug"
    del records[2]["wikipedia"]
    serve_once(httpx_mock, records)

    run = ingest(client)

    assert run["status"] == "succeeded" and run["records_rejected"] == 0
    assert run["schema_drift"] == {
        "unknown_fields": {"nickname": 2},
        "missing_fields": {"wikipedia": 1},
    }


def test_schema_drift_adds_up_over_the_pages_of_a_run(
    client: TestClient, httpx_mock: HTTPXMock, crew_records: list[dict[str, Any]]
) -> None:
    first, second = copy.deepcopy(crew_records[:2]), copy.deepcopy(crew_records[2:4])
    for record in [*first, second[0]]:
        record["nickname"] = "x"
    del second[1]["wikipedia"]
    first_page = envelope(first, has_next=True, total=4)
    httpx_mock.add_response(method="POST", url=QUERY_URL, json=first_page)
    httpx_mock.add_response(method="POST", url=QUERY_URL, json=envelope(second, page=2))

    run = ingest(client)

    assert run["status"] == "succeeded" and run["pages_fetched"] == 2
    assert run["schema_drift"] == {
        "unknown_fields": {"nickname": 3},
        "missing_fields": {"wikipedia": 1},
    }


COUNT_FIELDS = (
    "pages_fetched",
    "records_fetched",
    "records_valid",
    "records_rejected",
    "rows_inserted",
    "rows_updated",
    "rows_unchanged",
    "rows_deleted",
)


def test_the_longest_names_and_launch_lists_fit_the_name_index(
    client: TestClient, httpx_mock: HTTPXMock, crew_records: list[dict[str, Any]]
) -> None:
    """A btree entry holds at most 2,704 bytes. The name index carries the name twice (as is and
    folded) and the agency: with the longest of each in four-byte characters, and a launch list
    far beyond any crew's, the record still loads and is found by name."""
    record = copy.deepcopy(crew_records[0])
    record |= {
        "name": "\U0001f680" * 200,
        "agency": "\U0001f30d" * 100,
        "launches": [f"{i:024x}" for i in range(1000)],
    }
    serve_once(httpx_mock, [record])

    run = ingest(client)

    assert run["status"] == "succeeded", run["error"]
    found = client.get("/crew", params={"name": "\U0001f680" * 3, "sort": "name"}).json()
    assert [(m["id"], len(m["launches"])) for m in found["items"]] == [(record["id"], 1000)]
