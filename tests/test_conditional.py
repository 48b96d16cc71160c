"""Conditional GET on crew reads: ETag and Last-Modified move only when the data they cover does."""

import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.api.conditional import EPOCH
from app.db import get_engine
from tests.conftest import ingest, wait_until
from tests.fake_upstream import FakeUpstream

SECOND = timedelta(seconds=1)


def date_of(http_date: str) -> datetime:
    return parsedate_to_datetime(http_date)


def validators(client: TestClient, path: str) -> tuple[str, str]:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-cache"
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    return etag, response.headers["last-modified"]


def paths(member: dict[str, Any]) -> list[str]:
    return ["/crew?agency=NASA", f"/crew/{member['id']}", f"/crew/{member['id']}/history"]


def test_not_modified_until_a_run_changes_what_a_read_covers(
    client: TestClient, upstream: FakeUpstream
) -> None:
    changed, untouched = upstream.records[0], upstream.records[5]
    ingest(client)
    before = {path: validators(client, path) for path in paths(changed) + paths(untouched)}

    assert ingest(client)["rows_unchanged"] == 18
    for path, (etag, _) in before.items():
        assert validators(client, path)[0] == etag
        response = client.get(path, headers={"If-None-Match": etag})
        assert (response.status_code, response.content) == (304, b"")
        assert response.headers["etag"] == etag
    # Last-Modified is the change time rounded up: a date a second past that one says the
    # client's copy is from after the change, once that date is no longer in the future
    later = format_datetime(date_of(max(lm for _, lm in before.values())) + SECOND, True)
    wait_until(lambda: datetime.now(UTC) >= date_of(later))
    for path in before:
        assert client.get(path, headers={"If-Modified-Since": later}).status_code == 304

    upstream.records = [{**changed, "status": "retired"}, *upstream.records[1:]]
    assert ingest(client)["rows_updated"] == 1

    for path in paths(changed):
        etag, last_modified = before[path]
        assert validators(client, path)[0] != etag
        assert client.get(path, headers={"If-None-Match": etag}).status_code == 200
        assert client.get(path, headers={"If-Modified-Since": last_modified}).status_code == 200
    for path in paths(untouched)[1:]:
        assert validators(client, path) == before[path]


def test_if_none_match_lists_weak_and_star_and_wins_over_if_modified_since(
    client: TestClient, upstream: FakeUpstream
) -> None:
    ingest(client)
    etag, last_modified = validators(client, "/crew")
    old = format_datetime(parsedate_to_datetime(last_modified).replace(year=2000), usegmt=True)

    for header in (f'"nope", W/{etag}', "*", etag):
        assert client.get("/crew", headers={"If-None-Match": header}).status_code == 304
    mismatched = {"If-None-Match": '"nope"', "If-Modified-Since": last_modified}
    assert client.get("/crew", headers=mismatched).status_code == 200
    assert client.get("/crew", headers={"If-Modified-Since": old}).status_code == 200
    assert client.get("/crew", headers={"If-Modified-Since": "yesterday"}).status_code == 200


def test_empty_crew_has_a_stable_etag_and_unknown_members_none(client: TestClient) -> None:
    response = client.get("/crew")

    assert response.headers["etag"] == '"0"' and "last-modified" not in response.headers
    assert client.get("/crew", headers={"If-None-Match": '"0"'}).status_code == 304
    missing = client.get(f"/crew/{'a' * 24}", headers={"If-None-Match": "*"})
    assert missing.status_code == 404 and "etag" not in missing.headers


# Two runs whose load transactions began within one wall-clock second: each run's rows (crew
# `updated_at`, the versions it opened and closed) are dated, as PostgreSQL's now() would have
# dated them, at a fraction of the same second ten seconds ago.
REDATE_RUN = (
    "UPDATE crew SET updated_at = :moment WHERE id IN "
    "(SELECT crew_id FROM crew_versions WHERE opened_run_id = :run);"
    "UPDATE crew_versions SET valid_from = :moment WHERE opened_run_id = :run;"
    "UPDATE crew_versions SET valid_to = :moment WHERE closed_run_id = :run"
)


def redate(run_id: int, moment: datetime) -> None:
    with get_engine().begin() as connection:
        for statement in REDATE_RUN.split(";"):
            connection.execute(text(statement), {"run": run_id, "moment": moment})


@pytest.fixture(name="second")
def second_fixture() -> datetime:
    """A whole second ten seconds ago, in which both runs of a test are dated."""
    return datetime.now(UTC).replace(microsecond=0) - 10 * SECOND


def run_within(client: TestClient, second: datetime, fraction: float) -> None:
    run = ingest(client)
    assert run["status"] == "succeeded", run
    redate(run["id"], second + fraction * SECOND)


def test_a_change_in_the_same_second_is_never_hidden_by_if_modified_since(
    client: TestClient, upstream: FakeUpstream, second: datetime
) -> None:
    member = upstream.records[0]
    upstream.records = [{**member, "agency": "A0"}, *upstream.records[1:]]
    run_within(client, second, 0.2)
    cached = client.get("/crew", params={"agency": "A0"})
    assert cached.json()["total"] == 1
    assert date_of(cached.headers["last-modified"]) == second + SECOND  # rounded up

    upstream.records = [{**member, "agency": "A1"}, *upstream.records[1:]]
    run_within(client, second, 0.7)
    revalidated = client.get(
        "/crew",
        params={"agency": "A0"},
        headers={"If-Modified-Since": cached.headers["last-modified"]},
    )

    assert revalidated.status_code == 200
    assert revalidated.json()["total"] == 0
    assert revalidated.headers["etag"] != cached.headers["etag"]


def test_a_date_in_the_future_is_ignored_on_every_endpoint(
    client: TestClient, upstream: FakeUpstream
) -> None:
    ingest(client)
    member = upstream.records[0]["id"]
    instant = datetime.now(UTC).isoformat()
    future = {"If-Modified-Since": "Fri, 31 Dec 9999 23:59:59 GMT"}
    for path in (*paths({"id": member}), f"/crew?as_of={quote(instant)}"):
        response = client.get(path, headers=future)
        assert (response.status_code, response.headers["etag"]) == (
            200,
            validators(client, path)[0],
        )
    tomorrow = format_datetime(datetime.now(UTC) + timedelta(days=1), usegmt=True)
    assert client.get("/crew", headers={"If-Modified-Since": tomorrow}).status_code == 200


def test_as_of_answers_carry_the_validators_of_the_state_they_show(
    client: TestClient, upstream: FakeUpstream, second: datetime
) -> None:
    member = upstream.records[0]
    run_within(client, second, 0.2)
    then = (second + 0.5 * SECOND).isoformat()
    past = {path: validators(client, path) for path in (f"/crew/{member['id']}", "/crew")}
    upstream.records = [{**member, "status": "retired"}, *upstream.records[1:]]
    run_within(client, second + 2 * SECOND, 0.2)
    current = client.get(f"/crew/{member['id']}").headers["etag"]

    before_member = client.get(f"/crew/{member['id']}", params={"as_of": "2000-01-01T00:00:00Z"})
    assert before_member.status_code == 404 and "etag" not in before_member.headers
    for etag in ("*", current):
        response = client.get(
            f"/crew/{member['id']}",
            params={"as_of": "2000-01-01T00:00:00Z"},
            headers={"If-None-Match": etag},
        )
        assert response.status_code == 404
    for path, (etag, _) in past.items():
        shown = client.get(path, params={"as_of": then})
        assert shown.headers["etag"] == etag != client.get(path).headers["etag"]
        assert (
            client.get(path, params={"as_of": then}, headers={"If-None-Match": etag}).status_code
            == 304
        )
        stale = client.get(path, headers={"If-None-Match": etag})
        assert stale.status_code == 200
    assert client.get("/crew", params={"as_of": "2000-01-01T00:00:00Z"}).headers["etag"] == '"0"'


def test_history_total_items_and_etag_come_from_one_snapshot(
    client: TestClient, upstream: FakeUpstream
) -> None:
    member = upstream.records[0]
    ingest(client)
    answers: list[dict[str, Any]] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            response = client.get(f"/crew/{member['id']}/history", params={"limit": 1000})
            answers.append({"etag": response.headers["etag"], **response.json()})

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for n in range(30):
            status = "retired" if n % 2 == 0 else "active"
            upstream.records = [{**member, "status": status}, *upstream.records[1:]]
            assert ingest(client)["rows_updated"] == 1
    finally:
        done.set()
        for reader in readers:
            reader.join()

    assert len(answers) > 30
    for answer in answers:
        assert answer["total"] == len(answer["items"])
        newest = datetime.fromisoformat(answer["items"][0]["valid_from"])
        assert answer["etag"] == f'"{(newest - EPOCH) // timedelta(microseconds=1):x}"'


def endpoints(member: str, instant: str) -> list[str]:
    at = quote(instant)
    return [
        "/crew",
        "/crew?agency=NASA&sort=-updated_at&limit=3",
        f"/crew/{member}",
        f"/crew/{member}/history",
        f"/crew?as_of={at}",
        f"/crew/{member}?as_of={at}",
    ]


def conditions(etag: str, last_modified: str) -> list[dict[str, str]]:
    return [
        {"If-None-Match": etag},
        {"If-Modified-Since": last_modified},
        {"If-None-Match": etag, "If-Modified-Since": last_modified},
    ]


def test_every_endpoint_and_condition_across_changes_within_one_second(
    client: TestClient, upstream: FakeUpstream, second: datetime
) -> None:
    member = upstream.records[0]
    run_within(client, second, 0.1)
    instant = (second + 0.3 * SECOND).isoformat()
    before = {path: validators(client, path) for path in endpoints(member["id"], instant)}
    upstream.records = [{**member, "status": "retired"}, *upstream.records[1:]]
    run_within(client, second, 0.6)

    for path, (etag, last_modified) in before.items():
        as_of = "as_of=" in path  # shows the state at 0.3 s, which the second run left alone
        for headers in conditions(etag, last_modified):
            expected = 304 if as_of and "If-None-Match" in headers else 200
            response = client.get(path, headers=headers)
            assert response.status_code == expected, (path, headers)
            if expected == 200:
                assert response.json() == client.get(path).json()
        now_etag, now_last_modified = validators(client, path)
        assert (now_etag == etag) == as_of, path
        for headers in conditions(now_etag, now_last_modified):  # the newest change is in
            expected = 304 if "If-None-Match" in headers else 200  # the second of the date
            assert client.get(path, headers=headers).status_code == expected, (path, headers)
