"""HTTP API behaviour: filters, sorting, paging, run listing, 404/409/422."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.config import settings
from app.ingest import service
from app.models import RunTrigger
from tests.conftest import ingest, query_one
from tests.fake_upstream import FakeUpstream, Fault


@pytest.fixture(name="loaded")
def loaded_fixture(client: TestClient, upstream: FakeUpstream) -> list[dict[str, Any]]:
    assert ingest(client)["status"] == "succeeded"
    return list(upstream.records)


def names(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [member["name"] for member in response.json()["items"]]


def test_agency_filter_is_case_insensitive(
    client: TestClient, loaded: list[dict[str, Any]]
) -> None:
    assert names(client.get("/crew?agency=jaxa")) == ["Akihiko Hoshide", "Soichi Noguchi"]


def test_agency_filter_compares_as_postgresql_lowers_and_ignores_whitespace(
    client: TestClient, upstream: FakeUpstream
) -> None:
    first, second, third = upstream.records[:3]
    upstream.records = [{**first, "agency": "İSRO"}, {**second, "agency": " NASA "}, third]
    ingest(client)

    for agency in ("İSRO", "isro", "İsro"):
        assert names(client.get("/crew", params={"agency": agency})) == [first["name"]], agency
    for agency in ("nasa", " NASA", "NASA "):
        assert client.get("/crew", params={"agency": agency}).json()["total"] == 2, agency
    assert client.get(f"/crew/{second['id']}").json()["agency"] == "NASA"


def test_status_name_and_launch_filters(client: TestClient, loaded: list[dict[str, Any]]) -> None:
    assert client.get("/crew?status=retired").json()["total"] == 0
    assert client.get("/crew?status=active").json()["total"] == 18
    assert names(client.get("/crew?name=HURL")) == ["Douglas Hurley"]
    assert names(client.get("/crew?name=%25")) == []  # LIKE wildcards are literal
    demo2 = "5eb87d46ffd86e000604b388"
    assert names(client.get(f"/crew?launch={demo2}")) == ["Douglas Hurley", "Robert Behnken"]


def test_sort_and_pagination(client: TestClient, loaded: list[dict[str, Any]]) -> None:
    everyone = sorted(r["name"] for r in loaded)
    assert names(client.get("/crew?limit=5")) == everyone[:5]
    assert names(client.get("/crew?limit=5&offset=15")) == everyone[15:]
    assert names(client.get("/crew?sort=-name&limit=3")) == everyone[::-1][:3]
    by_agency = names(client.get("/crew?sort=agency&limit=1000"))
    agencies = [next(r["agency"] for r in loaded if r["name"] == n) for n in by_agency]
    assert agencies == sorted(agencies)
    body = client.get("/crew?limit=2&offset=1").json()
    assert (body["total"], body["limit"], body["offset"], len(body["items"])) == (18, 2, 1, 2)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "offset=-1",
        "sort=height",
        "status=resting",
        "launch=xyz",
        "include_deleted=maybe",
        "agency=" + "a" * 101,
        "name=%00",
        "agency=",
        "agency=%20%20",
        "agency=%1F%1C",  # str.strip() removes them; the pattern must not let them through
        "name=%1D",
        "name=",
        "name=%09",
    ],
)
def test_invalid_parameters_answer_422_naming_the_parameter(client: TestClient, query: str) -> None:
    response = client.get(f"/crew?{query}")

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", query.split("=")[0]]


def test_crew_member_by_id_and_404(client: TestClient, loaded: list[dict[str, Any]]) -> None:
    record = loaded[3]
    assert client.get(f"/crew/{record['id']}").json()["name"] == record["name"]
    assert client.get(f"/crew/{record['id'].upper()}").json()["id"] == record["id"]
    missing = client.get("/crew/" + "0" * 24)
    assert missing.status_code == 404
    assert missing.json() == {"detail": f"crew member {'0' * 24} not found"}
    assert client.get("/crew/not-an-id").status_code == 422


def test_second_trigger_while_a_run_is_active_answers_409(
    client: TestClient, session: Session
) -> None:
    active = service.create_run(session, RunTrigger.cli)

    response = client.post("/ingest")

    assert response.status_code == 409
    assert response.json()["active_run_id"] == active.id
    assert response.headers["location"] == f"/ingest/{active.id}"
    assert client.get("/ingest").json()["total"] == 1


def test_run_listing_newest_first_with_status_filter(
    client: TestClient, loaded: list[dict[str, Any]], upstream: FakeUpstream
) -> None:
    upstream.fail(1, Fault("status", status=404))
    client.post("/ingest")

    runs = client.get("/ingest").json()
    assert [(r["id"], r["status"]) for r in runs["items"]] == [(2, "failed"), (1, "succeeded")]
    failed = client.get("/ingest?status=failed").json()
    assert (failed["total"], failed["items"][0]["error"]) == (1, "page 1: HTTP 404 Not Found")
    assert client.get("/ingest?limit=1&offset=1").json()["items"][0]["id"] == 1
    assert client.get("/ingest/99").status_code == 404
    assert client.get("/ingest/99/rejects").status_code == 404
    assert client.get("/ingest/0").status_code == 422
    assert client.get("/ingest?status=sleeping").status_code == 422


def test_rejects_are_listed_with_errors_and_raw_record(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "INGEST_PAGE_SIZE", 50)  # a record without an id ends no page
    upstream.records[4] = {**upstream.records[4], "status": "on mars"}
    upstream.records[9] = "not an object"

    run = client.post("/ingest").json()
    rejects = client.get(f"/ingest/{run['id']}/rejects").json()

    assert client.get(f"/ingest/{run['id']}").json()["records_rejected"] == 2
    assert rejects["total"] == 2
    first, second = rejects["items"]
    assert first["record_id"] == upstream.records[4]["id"]
    assert first["raw"] == upstream.records[4]
    assert [e["loc"] for e in first["errors"]] == [["status"]]
    assert (second["record_id"], second["raw"]) == (None, "not an object")
    assert client.get("/crew").json()["total"] == 16


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}, "problems": []}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "database": True,
        "writable": True,
        "migrations": True,
        "recovery": True,
    }


def test_openapi_documents_every_endpoint(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operations = [op for path in spec["paths"].values() for op in path.values()]

    assert len(operations) == 19
    assert all(op.get("summary") and op.get("description") for op in operations)
    events = spec["paths"]["/ingest/{run_id}/events"]["get"]
    assert events["operationId"] == "stream_ingest_events"
    assert set(events["responses"]) >= {"200", "404", "503"}
    assert list(events["responses"]["200"]["content"]) == ["text/event-stream"]
    params = spec["paths"]["/crew"]["get"]["parameters"]
    assert all(p.get("description") for p in params)
    assert client.get("/docs").status_code == 200


def test_total_is_the_planner_estimate_by_default_exact_where_the_page_proves_it(
    client: TestClient, loaded: list[dict[str, Any]]
) -> None:
    broad = client.get("/crew?agency=NASA&limit=3")
    whole = client.get("/crew?agency=NASA").json()  # the first page holds every match
    last = client.get("/crew?agency=NASA&limit=3&offset=8").json()  # skipped 8, holds 2
    beyond = client.get("/crew?agency=NASA&offset=50").json()
    after = client.get(f"/crew?agency=NASA&limit=9&cursor={broad.json()['next']}").json()

    assert broad.json()["total_exact"] is False and broad.json()["total"] >= 4
    assert broad.headers["vary"] == "Prefer" and "preference-applied" not in broad.headers
    assert (whole["total"], whole["total_exact"], len(whole["items"])) == (10, True, 10)
    assert (last["total"], last["total_exact"], len(last["items"])) == (10, True, 2)
    assert (beyond["items"], beyond["total_exact"]) == ([], False)
    # a page after a cursor has not seen what came before it
    assert (after["total_exact"], len(after["items"])) == (False, 7) and after["total"] >= 7


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("count=exact&", {}),
        ("", {"Prefer": "count=exact"}),
        ("", {"Prefer": 'return=minimal, COUNT="exact"; strict'}),
        ("count=exact&", {"Prefer": "count=planned"}),  # the parameter wins
    ],
)
def test_count_exact_counts_every_match_from_the_parameter_or_the_prefer_header(
    client: TestClient, loaded: list[dict[str, Any]], query: str, headers: dict[str, str]
) -> None:
    first = client.get(f"/crew?{query}agency=NASA&limit=3", headers=headers)
    cursor = first.json()["next"]
    after = client.get(f"/crew?{query}agency=NASA&limit=3&cursor={cursor}", headers=headers)

    assert (first.json()["total"], first.json()["total_exact"]) == (10, True)
    applied = first.headers.get("preference-applied")
    assert applied == ("count=exact" if "exact" in headers.get("Prefer", "") else None)
    assert (after.json()["total"], after.json()["total_exact"]) == (10, True)


def test_count_estimated_counts_when_few_matches_are_expected(
    client: TestClient, loaded: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.api import crew

    monkeypatch.setattr(crew, "ESTIMATE_ABOVE", 5)
    headers = {"Prefer": "count=estimated, count=exact"}  # the first count preference counts

    broad = client.get("/crew?agency=NASA&limit=3", headers=headers)
    narrow = client.get("/crew?agency=JAXA&limit=1&count=estimated").json()
    planned = client.get("/crew?agency=JAXA&limit=1", headers={"Prefer": "count=nonsense"})

    assert (broad.json()["total_exact"], broad.headers["preference-applied"]) == (
        False,
        "count=estimated",
    )
    assert (narrow["total"], narrow["total_exact"]) == (2, True)
    assert planned.json()["total_exact"] is False
    assert "preference-applied" not in planned.headers
    assert client.get("/crew?count=everything").status_code == 422


@pytest.mark.parametrize(
    "query",
    [
        "agency=x'); DROP TABLE crew; --",
        "name=O'Brien\\'' OR ''='",
        "name=$$ OR true --",
        "agency=%27%27%27",
    ],
)
def test_quotes_in_filters_are_values_never_sql(
    client: TestClient, loaded: list[dict[str, Any]], query: str
) -> None:
    body = client.get(f"/crew?{query}").json()

    assert (body["items"], body["total"], body["total_exact"]) == ([], 0, True)
    assert client.get("/crew").json()["total"] == 18


def test_the_estimate_function_only_plans_its_query(loaded: list[dict[str, Any]]) -> None:
    estimate = query_one("SELECT planner_row_estimate('DELETE FROM crew')")[0]

    assert estimate == 0  # the plan's top node (ModifyTable) returns no rows
    assert query_one("SELECT count(*) FROM crew")[0] == 18
