"""Versions, change lists, member history and dry runs, through real snapshots of the upstream."""

import copy
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.ingest import service
from app.models import RunTrigger
from tests.conftest import crew_checksum, ingest, query_one, run_row, wait_until
from tests.fake_upstream import FakeUpstream

FIELDS = ("id", "name", "status", "agency", "image", "wikipedia", "launches")
NEWCOMER_ID = "aaaaaaaaaaaaaaaaaaaaaaaa"


def versions_checksum() -> str:
    query = "SELECT md5(coalesce(string_agg(v::text, '|' ORDER BY crew_id, valid_from), '')) "
    return str(query_one(query + "FROM crew_versions v")[0])


def changes(client: TestClient, run_id: int, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/ingest/{run_id}/changes", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["items"])
    return list(body["items"])


def whole(record: dict[str, Any], side: str) -> dict[str, Any]:
    other = "after" if side == "before" else "before"
    return {name: {side: record[name], other: None} for name in FIELDS}


def second_snapshot(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Member 0 retires and changes agency, member 1 vanishes, a newcomer arrives."""
    changed = copy.deepcopy(records)
    changed[0].update(status="retired", agency="ESA")
    del changed[1]
    return [*changed, {**records[2], "id": NEWCOMER_ID, "name": "New Member"}]


def third_snapshot(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Member 1 comes back under a new name; the rest as in the second snapshot."""
    returning = {**records[1], "name": records[1]["name"] + " Jr."}
    return [*second_snapshot(records), returning]


def expected_second(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    newcomer = {**records[2], "id": NEWCOMER_ID, "name": "New Member"}
    expected = [
        {
            "crew_id": records[0]["id"],
            "op": "update",
            "changed": {
                "status": {"before": "active", "after": "retired"},
                "agency": {"before": records[0]["agency"], "after": "ESA"},
            },
        },
        {"crew_id": records[1]["id"], "op": "delete", "changed": whole(records[1], "before")},
        {"crew_id": NEWCOMER_ID, "op": "insert", "changed": whole(newcomer, "after")},
    ]
    return sorted(expected, key=lambda change: change["crew_id"])


def test_three_runs_list_insert_update_delete_restore_field_by_field(
    client: TestClient, upstream: FakeUpstream
) -> None:
    records = list(upstream.records)
    first = ingest(client)
    upstream.records = second_snapshot(records)
    second = ingest(client)
    upstream.records = third_snapshot(records)
    third = ingest(client)

    inserted = changes(client, first["id"])
    assert inserted == sorted(
        ({"crew_id": r["id"], "op": "insert", "changed": whole(r, "after")} for r in records),
        key=lambda change: change["crew_id"],
    )
    assert changes(client, second["id"]) == expected_second(records)
    assert changes(client, third["id"]) == [
        {
            "crew_id": records[1]["id"],
            "op": "restore",
            "changed": {
                "name": {"before": records[1]["name"], "after": records[1]["name"] + " Jr."}
            },
        }
    ]
    assert changes(client, second["id"], op="delete") == [expected_second(records)[1]]
    assert changes(client, third["id"], op="insert") == []


def test_history_of_one_member_newest_first(client: TestClient, upstream: FakeUpstream) -> None:
    records = list(upstream.records)
    member = records[1]
    first = ingest(client)
    upstream.records = second_snapshot(records)
    second = ingest(client)
    upstream.records = third_snapshot(records)
    third = ingest(client)

    response = client.get(f"/crew/{member['id'].upper()}/history")

    assert response.status_code == 200
    body = response.json()
    assert (body["total"], body["limit"], body["offset"]) == (3, 100, 0)
    restored, deleted, inserted = body["items"]
    assert [v["op"] for v in body["items"]] == ["restore", "delete", "insert"]
    assert [v["run_id"] for v in body["items"]] == [third["id"], second["id"], first["id"]]
    assert [v["closed_by_run_id"] for v in body["items"]] == [None, third["id"], second["id"]]
    assert {k: inserted[k] for k in FIELDS} == {k: member[k] for k in FIELDS}
    assert {k: deleted[k] for k in FIELDS} == {k: member[k] for k in FIELDS}
    assert restored["name"] == member["name"] + " Jr."
    assert (inserted["deleted_at"], restored["deleted_at"]) == (None, None)
    assert deleted["deleted_at"] == deleted["valid_from"] == inserted["valid_to"]
    assert restored["valid_from"] == deleted["valid_to"] and restored["valid_to"] is None
    assert client.get(f"/crew/{member['id']}/history?limit=1&offset=1").json()["items"] == [deleted]
    assert client.get(f"/crew/{'f' * 24}/history").status_code == 404
    assert client.get("/crew/nothex/history").status_code == 422


def test_unchanged_reingest_writes_no_versions(client: TestClient, upstream: FakeUpstream) -> None:
    ingest(client)
    before = versions_checksum()

    run = ingest(client)

    assert run["rows_unchanged"] == 18
    assert versions_checksum() == before
    assert query_one("SELECT count(*) FROM crew_versions")[0] == 18
    assert changes(client, run["id"]) == []


def test_changes_of_unknown_run_and_bad_op(client: TestClient) -> None:
    assert client.get("/ingest/99/changes").status_code == 404
    assert client.get("/ingest/1/changes?op=upsert").status_code == 422


def test_dry_run_lists_the_changes_and_leaves_the_tables_untouched(
    client: TestClient, upstream: FakeUpstream
) -> None:
    records = list(upstream.records)
    ingest(client)
    crew_before, versions_before = crew_checksum(), versions_checksum()
    upstream.records = second_snapshot(records)

    dry = ingest(client, dry_run=True)

    assert (dry["status"], dry["dry_run"]) == ("succeeded", True)
    counts = (dry["rows_inserted"], dry["rows_updated"], dry["rows_deleted"])
    assert counts == (1, 1, 1) and dry["rows_unchanged"] == 16
    assert changes(client, dry["id"]) == expected_second(records)
    assert changes(client, dry["id"], op="update") == [expected_second(records)[0]]
    assert (crew_checksum(), versions_checksum()) == (crew_before, versions_before)

    real = ingest(client)

    assert real["dry_run"] is False
    assert changes(client, real["id"]) == changes(client, dry["id"])
    assert crew_checksum() != crew_before


def test_cancelled_dry_run_keeps_no_changes(
    client: TestClient, session: Session, upstream: FakeUpstream
) -> None:
    upstream.page_delay_seconds = 0.3
    run = service.create_run(session, RunTrigger.api, dry_run=True)
    assert run.id is not None
    worker = threading.Thread(target=service.execute_run, args=(run.id,))
    worker.start()
    wait_until(lambda: run_row(run.id).pages_fetched >= 1)

    client.post(f"/ingest/{run.id}/cancel")
    worker.join(timeout=20)

    assert run_row(run.id).status == "cancelled"
    assert changes(client, run.id) == []
    assert query_one("SELECT count(*) FROM crew")[0] == 0


@pytest.mark.parametrize("first_dry", [True, False])
def test_dry_and_real_runs_share_the_one_active_run_guard(
    client: TestClient, session: Session, first_dry: bool
) -> None:
    active = service.create_run(session, RunTrigger.api, dry_run=first_dry)

    response = client.post("/ingest", params={"dry_run": not first_dry})

    assert response.status_code == 409
    assert response.json()["active_run_id"] == active.id
    assert query_one("SELECT count(*) FROM ingest_runs")[0] == 1
