"""Keyset pagination of GET /crew: whole walks in every sort, walks across an ingest, cursors
that do not belong to the query, and offset paging beside it."""

import base64
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.api.crew_sort import CrewSort
from app.db import get_engine
from tests.conftest import ingest
from tests.fake_upstream import FakeUpstream

SORTS = [sort.value for sort in CrewSort]

# Rows that make ties and edge keys: no agency, an empty agency, agencies differing in case, a
# repeated name, a soft-deleted member.
EXTRA_ROWS = """
INSERT INTO crew (id, name, status, agency, launches, updated_at, deleted_at) VALUES
    ('ffffffffffffffffffff0001', 'Douglas Hurley', 'retired', NULL, '{}', now(), NULL),
    ('ffffffffffffffffffff0002', 'Zed Nobody', 'unknown', '', '{}', now(), NULL),
    ('ffffffffffffffffffff0003', 'Ada Lower', 'active', 'nasa', '{}', now(), NULL),
    ('ffffffffffffffffffff0004', 'Gone Member', 'inactive', 'ESA', '{}', now(), now())
"""


@pytest.fixture(name="loaded")
def loaded_fixture(client: TestClient, upstream: FakeUpstream) -> list[dict[str, Any]]:
    assert ingest(client)["status"] == "succeeded"
    with get_engine().begin() as connection:
        connection.execute(text(EXTRA_ROWS))
    return list(upstream.records)


def everything(client: TestClient, query: str) -> list[dict[str, Any]]:
    body = client.get(f"/crew?{query}&limit=1000").json()
    assert body["next"] is None
    return list(body["items"])


def walk(client: TestClient, query: str, limit: int) -> list[dict[str, Any]]:
    """Every page of a query by following the Link header, checking each page's envelope."""
    items: list[dict[str, Any]] = []
    url = f"/crew?{query}&limit={limit}"
    while True:
        response = client.get(url)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        if body["next"] is None:
            assert "link" not in response.headers
            assert len(body["items"]) <= limit
            return items
        assert len(body["items"]) == limit
        url = response.headers["link"].removeprefix("<").removesuffix('>; rel="next"')
        assert f"cursor={body['next']}" in url


@pytest.mark.parametrize("sort", ["name", "-name"])
def test_a_launch_checked_beside_the_name_walk_keeps_every_match_in_order(
    client: TestClient, loaded: list[dict[str, Any]], sort: str
) -> None:
    """name + launch on a name sort checks the launch by primary key beside the walk of the
    name index: the same rows, in the same order, by cursor and by offset."""
    launch = "5eb87d4dffd86e000604b38e"  # Crew-1: one of its four has no "i" in the name
    having_it = {m["id"] for m in loaded if launch in m["launches"]}
    in_order = [m["id"] for m in everything(client, f"name=I&sort={sort}") if m["id"] in having_it]
    query = f"name=I&launch={launch}&sort={sort}"

    walked = [m["id"] for m in walk(client, query, limit=1)]
    pages = [client.get(f"/crew?{query}&limit=1&offset={n}").json() for n in range(10)]

    assert walked == in_order
    assert [m["id"] for page in pages for m in page["items"]] == in_order
    assert 1 < len(in_order) < len(having_it)  # the name filter removes some, keeps several


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("include_deleted", ["false", "true"])
def test_walk_every_sort_without_duplicates_or_gaps(
    client: TestClient, loaded: list[dict[str, Any]], sort: str, include_deleted: str
) -> None:
    query = f"sort={sort}&include_deleted={include_deleted}"

    walked = walk(client, query, limit=4)

    expected = everything(client, query)
    assert len(expected) == 21 + (include_deleted == "true")
    assert [m["id"] for m in walked] == [m["id"] for m in expected]


@pytest.mark.parametrize(
    "filters", ["agency=NASA", "status=active", "name=o", "launch=5eb87d46ffd86e000604b388"]
)
@pytest.mark.parametrize("sort", ["agency", "-updated_at"])
def test_walk_with_filters(
    client: TestClient, loaded: list[dict[str, Any]], filters: str, sort: str
) -> None:
    query = f"{filters}&sort={sort}"

    walked = walk(client, query, limit=3)

    assert [m["id"] for m in walked] == [m["id"] for m in everything(client, query)]
    assert walked  # each filter matches something


def test_agency_sorts_case_insensitively_with_no_agency_first(
    client: TestClient, loaded: list[dict[str, Any]]
) -> None:
    agencies = [m["agency"] for m in everything(client, "sort=agency")]

    assert agencies[:2] == [None, ""]  # both sort as the empty agency, then by id
    assert {a for a in agencies if a and a.lower() == "nasa"} == {"NASA", "nasa"}
    keys = [(a or "").lower() for a in agencies]
    assert keys == sorted(keys)
    assert [m["agency"] for m in everything(client, "sort=-agency")] == agencies[::-1]


def sort_field(sort: str) -> str:
    return sort.lstrip("-")


@pytest.mark.parametrize("sort", SORTS)
def test_walk_across_an_ingest_returns_every_unmoved_row_once(
    client: TestClient, loaded: list[dict[str, Any]], upstream: FakeUpstream, sort: str
) -> None:
    """Documented semantics: each page reads the table as committed when it is requested. A row
    whose sort key did not change during the walk appears exactly once, in order; a row whose
    key changed appears where its key was when each page was read (so once, twice or not)."""
    before = {m["id"]: m for m in everything(client, f"sort={sort}")}
    first = client.get(f"/crew?sort={sort}&limit=6").json()
    records = upstream.records
    records[0] = {**records[0], "agency": "Space Agency Renamed"}
    records[1] = {**records[1], "name": "A Renamed Member"}
    records[2] = {**records[2], "status": "retired"}
    del records[3]  # soft-deleted by the run
    records += [
        {**records[4], "id": f"{n:024x}", "name": f"New Member {n}", "agency": "New"}
        for n in range(5)
    ]

    assert ingest(client, allow_mass_delete="true")["status"] == "succeeded"

    rest = walk(client, f"sort={sort}&cursor={first['next']}", limit=4)
    after = everything(client, f"sort={sort}")
    walked_ids = [m["id"] for m in first["items"] + rest]
    field = sort_field(sort)
    unmoved = {
        i for i, m in before.items() if any(i == a["id"] and a[field] == m[field] for a in after)
    }
    assert len(unmoved) >= 12
    assert [i for i in walked_ids if i in unmoved] == [a["id"] for a in after if a["id"] in unmoved]
    repeated = {i for i in walked_ids if walked_ids.count(i) > 1}
    assert repeated <= set(before) - unmoved


def cursor_for(client: TestClient, query: str) -> str:
    body = client.get(f"/crew?{query}&limit=2").json()
    assert body["next"]
    return str(body["next"])


@pytest.mark.parametrize(
    "other",
    ["sort=-name", "sort=agency", "agency=nasa", "status=active", "name=a", "include_deleted=true"],
)
def test_a_cursor_from_another_query_is_422(
    client: TestClient, loaded: list[dict[str, Any]], other: str
) -> None:
    cursor = cursor_for(client, "sort=name")

    response = client.get(f"/crew?{other}&cursor={cursor}")

    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", "cursor"]
    assert error["msg"] == "the cursor belongs to another combination of filters and sort"
    assert client.get(f"/crew?sort=name&limit=50&cursor={cursor}").status_code == 200


def forged(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).rstrip(b"=").decode()


def test_malformed_cursors_are_422_never_500(
    client: TestClient, loaded: list[dict[str, Any]]
) -> None:
    real = cursor_for(client, "sort=updated_at")
    fingerprint, key, row_id = json.loads(base64.urlsafe_b64decode(real + "=" * (-len(real) % 4)))
    bad = [
        "x",
        "abc_-",
        forged("a", "b"),
        forged(fingerprint, key, "not-an-id"),
        forged(fingerprint, "yesterday", row_id),
        forged(fingerprint, "2026-01-01T00:00:00", row_id),  # no zone
        forged(fingerprint, "a\x00b", row_id),
        forged(fingerprint, 5, row_id),
        base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),
    ]
    for cursor in bad:
        response = client.get(f"/crew?sort=updated_at&cursor={cursor}")
        assert response.status_code == 422, (cursor, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", "cursor"]
    assert client.get("/crew?cursor=a%2Bb").status_code == 422  # not URL-safe base64
    assert client.get(f"/crew?sort=updated_at&cursor={real}").status_code == 200


def test_forged_cursors_the_database_cannot_take_are_422_never_500(
    client: TestClient, loaded: list[dict[str, Any]]
) -> None:
    by_name = json.loads(base64.urlsafe_b64decode(cursor_for(client, "sort=name") + "=="))[0]
    by_time = json.loads(base64.urlsafe_b64decode(cursor_for(client, "sort=updated_at") + "=="))[0]
    row_id = "0" * 24
    nested = base64.urlsafe_b64encode(b"[" * 1000).rstrip(b"=").decode()
    for sort, cursor in [
        ("name", forged(by_name, "\ud800", row_id)),  # JSON allows a lone surrogate, UTF-8 not
        ("name", nested),  # json.loads raises RecursionError
        ("updated_at", forged(by_time, "0001-01-01T00:00:00+14:00", row_id)),  # before year 1 UTC
    ]:
        response = client.get(f"/crew?sort={sort}&cursor={cursor}")
        assert response.status_code == 422, (cursor, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_a_cursor_time_in_any_zone_is_the_same_position(
    client: TestClient, loaded: list[dict[str, Any]]
) -> None:
    """PostgreSQL takes zone offsets up to 15:59; Python's up to 23:59. Same instant, same page."""
    first = client.get("/crew?sort=updated_at&limit=3").json()
    fingerprint, key, row_id = json.loads(base64.urlsafe_b64decode(first["next"] + "=="))
    moment = datetime.fromisoformat(key).astimezone(timezone(timedelta(hours=20)))
    assert moment.utcoffset() == timedelta(hours=20)

    shifted = client.get(
        f"/crew?sort=updated_at&cursor={forged(fingerprint, moment.isoformat(), row_id)}"
    )
    issued = client.get(f"/crew?sort=updated_at&cursor={first['next']}")

    assert shifted.status_code == issued.status_code == 200, shifted.text
    assert shifted.json()["items"] == issued.json()["items"] != []


def test_a_conditional_request_is_checked_before_it_is_answered_304(
    client: TestClient, loaded: list[dict[str, Any]]
) -> None:
    """A client's current ETag does not make an invalid request valid."""
    current = client.get("/crew?sort=name&limit=2")
    cursor = current.json()["next"]
    for query, parameter in [
        ("cursor=AAAA", "cursor"),
        (f"sort=-name&cursor={cursor}", "cursor"),
        (f"sort=name&cursor={cursor}&offset=3", "offset"),
    ]:
        for validator in (current.headers["etag"], "*"):
            response = client.get(f"/crew?{query}", headers={"If-None-Match": validator})
            assert response.status_code == 422, (query, response.text)
            assert response.json()["detail"][0]["loc"] == ["query", parameter]
    valid = client.get(f"/crew?sort=name&cursor={cursor}", headers={"If-None-Match": "*"})
    assert valid.status_code == 304


def test_cursor_and_offset_do_not_combine(client: TestClient, loaded: list[dict[str, Any]]) -> None:
    cursor = cursor_for(client, "sort=name")

    response = client.get(f"/crew?cursor={cursor}&offset=2")

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "offset"]


def test_offset_pages_also_offer_a_cursor_that_continues_them(
    client: TestClient, loaded: list[dict[str, Any]]
) -> None:
    every = [m["id"] for m in everything(client, "sort=status")]
    exact = {"Prefer": "count=exact"}
    page = client.get("/crew?sort=status&limit=5&offset=5", headers=exact)
    body = page.json()

    assert [m["id"] for m in body["items"]] == every[5:10]
    assert (body["total"], body["offset"], body["total_exact"]) == (21, 5, True)
    link = page.headers["link"]
    assert link == f'</crew?sort=status&limit=5&cursor={body["next"]}>; rel="next"'
    following = client.get(f"/crew?sort=status&limit=5&cursor={body['next']}", headers=exact)
    following = following.json()
    assert [m["id"] for m in following["items"]] == every[10:15]
    assert (following["total"], following["offset"]) == (21, 0)


def test_last_page_and_empty_results_have_no_next(
    client: TestClient, loaded: list[dict[str, Any]]
) -> None:
    exact = client.get("/crew?limit=21")
    nothing = client.get("/crew?agency=nobody")

    assert (len(exact.json()["items"]), exact.json()["next"]) == (21, None)
    assert "link" not in exact.headers
    assert nothing.json() == {
        "items": [], "total": 0, "limit": 100, "offset": 0, "total_exact": True, "next": None
    }  # fmt: skip
