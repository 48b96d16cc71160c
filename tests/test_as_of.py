"""GET /crew?as_of= and GET /crew/{id}?as_of=: the crew as they were at instants between runs."""

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from app.api import crew
from tests.conftest import ingest, query_one
from tests.fake_upstream import FakeUpstream
from tests.test_changes import NEWCOMER_ID, second_snapshot, third_snapshot
from tests.test_query_plans import LIMIT, SORTS, plan_of, problems, synthetic_fixture  # noqa: F401

FIELDS = ("id", "name", "status", "agency", "image", "wikipedia", "launches")


def db_now() -> str:
    return str(query_one("SELECT now()")[0].isoformat())


@pytest.fixture(name="instants")
def instants_fixture(client: TestClient, upstream: FakeUpstream) -> dict[str, Any]:
    """Three runs (insert all; update/delete/insert; restore), and an instant before each and
    after the last, with the records each run was given."""
    records = list(upstream.records)
    snapshots = [records, second_snapshot(records), third_snapshot(records)]
    instants = []
    for snapshot in snapshots:
        instants.append(db_now())
        upstream.records = snapshot
        assert ingest(client)["status"] == "succeeded"
    instants.append(db_now())
    return {"instants": instants, "snapshots": snapshots}


def listed(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/crew", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return dict(response.json())


def fields(member: dict[str, Any]) -> dict[str, Any]:
    return {name: member[name] for name in FIELDS}


def test_as_of_answers_the_crew_of_each_instant_exactly(
    client: TestClient, instants: dict[str, Any]
) -> None:
    before, after_first, after_second, after_third = instants["instants"]
    records, second, third = instants["snapshots"]

    assert listed(client, as_of=before)["items"] == []
    assert listed(client, as_of=before)["total"] == 0
    for instant, snapshot in ((after_first, records), (after_second, second)):
        live = listed(client, as_of=instant)
        assert [fields(m) for m in live["items"]] == sorted(snapshot, key=lambda r: r["name"])
        assert live["total"] == len(snapshot)
    everyone = listed(client, as_of=after_second, include_deleted=True)["items"]
    gone = [m for m in everyone if m["deleted_at"] is not None]
    assert [fields(m) for m in gone] == [records[1]]
    now = listed(client, as_of=after_third)["items"]
    assert now == listed(client)["items"]
    assert sorted(fields(m)["name"] for m in now) == sorted(r["name"] for r in third)


def test_as_of_keeps_filters_sort_and_pagination(
    client: TestClient, instants: dict[str, Any]
) -> None:
    _, after_first, after_second, _ = instants["instants"]
    records, second, _ = instants["snapshots"]

    nasa = listed(client, as_of=after_first, agency="nasa")["items"]
    assert [m["id"] for m in nasa] == [
        r["id"] for r in sorted(records, key=lambda r: r["name"]) if r["agency"] == "NASA"
    ]
    retired = listed(client, as_of=after_second, status="retired")["items"]
    assert [fields(m) for m in retired] == [second[0]]
    assert listed(client, as_of=after_first, status="retired")["items"] == []
    by_name_desc = sorted((r["name"] for r in records), reverse=True)
    page = listed(client, as_of=after_first, sort="-name", limit=5, offset=5)["items"]
    assert [m["name"] for m in page] == by_name_desc[5:10]
    walked, cursor = [], None
    while True:
        params = {"as_of": after_second, "sort": "agency", "limit": 4}
        body = listed(client, **params, **({"cursor": cursor} if cursor else {}))
        walked += body["items"]
        if (cursor := body["next"]) is None:
            break
    assert walked == listed(client, as_of=after_second, sort="agency")["items"]
    assert len(walked) == len(second)
    first_page = listed(client, as_of=after_first, limit=2)
    other_instant = {"as_of": after_second, "limit": 2, "cursor": first_page["next"]}
    assert client.get("/crew", params=other_instant).status_code == 422


def test_member_as_of(client: TestClient, instants: dict[str, Any]) -> None:
    before, after_first, after_second, _ = instants["instants"]
    records = instants["snapshots"][0]
    member = records[0]["id"]

    then = client.get(f"/crew/{member}", params={"as_of": after_first}).json()
    assert fields(then) == records[0]
    later = client.get(f"/crew/{member}", params={"as_of": after_second}).json()
    assert (later["status"], later["agency"]) == ("retired", "ESA")
    assert later["created_at"] == then["created_at"] < later["updated_at"]
    assert client.get(f"/crew/{NEWCOMER_ID}", params={"as_of": after_first}).status_code == 404
    assert client.get(f"/crew/{member}", params={"as_of": before}).status_code == 404


def test_as_of_in_the_future_or_without_zone_is_refused(client: TestClient) -> None:
    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    for path in ("/crew", f"/crew/{'a' * 24}"):
        for value in (future, "2026-01-01T00:00:00", "yesterday", "0001-01-01T00:00:00+01:00"):
            assert client.get(path, params={"as_of": value}).status_code == 422, (path, value)


def test_any_offset_and_the_distant_past_are_answered(client: TestClient) -> None:
    for value in ("2020-01-01T00:00:00+23:59", "0001-01-01T00:00:00Z", "2020-01-01T00:00:00-23:00"):
        assert listed(client, as_of=value)["items"] == []
        assert client.get(f"/crew/{'a' * 24}", params={"as_of": value}).status_code == 404


@pytest.mark.parametrize("sort", SORTS)
def test_as_of_lists_read_the_crew_sort_indexes(
    client: TestClient, synthetic: None, sort: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instant is pushed into both halves and the halves merged in index order: no sort of
    the whole crew (see crew_as_of in app/api/crew_query.py)."""
    monkeypatch.setattr(crew, "ESTIMATE_ABOVE", -1)
    as_of = db_now()
    failures = {}
    for filters in ("", "agency=NASA", "status=retired&name=han"):
        for direction in ("", "-"):
            url = f"/crew?{filters}&sort={direction}{sort}&limit={LIMIT}&as_of={quote(as_of)}"
            if found := problems(plan_of(client, url)):
                failures[url] = found
    assert failures == {}
