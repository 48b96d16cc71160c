"""Conditional GET on crew reads: ETag and Last-Modified move only when the data they cover does."""

from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import ingest
from tests.fake_upstream import FakeUpstream


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
    for path, (etag, last_modified) in before.items():
        assert validators(client, path) == (etag, last_modified)
        response = client.get(path, headers={"If-None-Match": etag})
        assert (response.status_code, response.content) == (304, b"")
        assert response.headers["etag"] == etag
        assert client.get(path, headers={"If-Modified-Since": last_modified}).status_code == 304

    upstream.records = [{**changed, "status": "retired"}, *upstream.records[1:]]
    assert ingest(client)["rows_updated"] == 1

    for path in paths(changed):
        etag, last_modified = before[path]
        assert validators(client, path)[0] != etag
        assert client.get(path, headers={"If-None-Match": etag}).status_code == 200
        assert client.get(path, headers={"If-Modified-Since": last_modified}).status_code in (
            200,
            304,  # Last-Modified has whole seconds: a change within the same second is not seen
        )
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
