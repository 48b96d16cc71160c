"""Bad records: stored as rejects whatever their JSON, bounded, and never a reason to lose a row."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import settings
from app.ingest import load
from app.ingest.storable import TOO_DEEP
from tests.conftest import crew_checksum, ingest, query_one
from tests.fake_upstream import FakeUpstream, SyntheticRecords

ID = "bbbbbbbbbbbbbbbbbbbbbbb{}"


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def rejects_of(client: TestClient, run: dict[str, Any]) -> list[dict[str, Any]]:
    return list(client.get(f"/ingest/{run['id']}/rejects?limit=1000").json()["items"])


def test_any_json_the_upstream_sends_is_stored_as_a_reject_or_loaded(
    client: TestClient, upstream: FakeUpstream
) -> None:
    good = {"name": "Fine", "status": "active"}
    upstream.records = upstream.records + [
        {"id": ID.format(1), "name": float("nan"), "status": "active"},
        {"id": ID.format(2), "name": "Inf", "status": "active", "agency": float("-inf")},
        {"id": ID.format(3), "name": "lone \ud800 surrogate", "status": "active"},
        {"id": ID.format(4), "name": "Deep", "status": "active", "launches": nested(100)},
        {"id": ID.format(5), "name": "N" * 100_000, "status": "active"},
        {"id": "\x00\ud800" * 500, "name": "Bad id", "status": "active"},
        {"id": ID.format(6), **good, "extra": [float("nan"), "\ud800\x00", nested(100)]},
    ]

    run = ingest(client)

    assert run["status"] == "succeeded", run["error"]
    assert (run["records_fetched"], run["records_rejected"], run["rows_inserted"]) == (25, 6, 19)
    raws = [reject["raw"] for reject in rejects_of(client, run)]
    assert raws[0]["name"] == "NaN" and raws[1]["agency"] == "-Infinity"
    assert raws[2]["name"] == "lone \ufffd surrogate"
    assert TOO_DEEP in str(raws[3]["launches"])
    assert isinstance(raws[4], str) and raws[4].startswith('{"id":"bbbb')
    assert len(raws[4]) == load.RAW_MAX_CHARS + 1 and raws[4].endswith("…")
    assert raws[5]["id"] == "\ufffd" * 1000
    record_ids = [reject["record_id"] for reject in rejects_of(client, run)]
    assert record_ids[5] == "\ufffd" * load.RECORD_ID_MAX_CHARS
    assert client.get(f"/crew/{ID.format(6)}").json()["name"] == "Fine"


@pytest.mark.parametrize(
    "change",
    [{"image": ""}, {"name": None}, {"status": "on the moon"}],
    ids=["empty image", "null name", "unknown status"],
)
def test_rejected_records_of_known_ids_keep_their_rows(
    client: TestClient, upstream: FakeUpstream, change: dict[str, Any]
) -> None:
    ingest(client)
    before = crew_checksum()
    upstream.records = [{**r, **change} if i % 2 else r for i, r in enumerate(upstream.records)]

    run = ingest(client)

    assert run["status"] == "succeeded", run["error"]
    assert (run["records_rejected"], run["rows_kept"], run["rows_deleted"]) == (9, 9, 0)
    assert (run["rows_updated"], run["rows_unchanged"]) == (0, 9)
    assert crew_checksum() == before
    assert client.get("/crew").json()["total"] == 18


def test_a_kept_row_comes_back_to_life_only_with_a_valid_record(
    client: TestClient, upstream: FakeUpstream
) -> None:
    ingest(client)
    first = upstream.records[0]
    upstream.records = [{**first, "image": ""}, *upstream.records[1:], {**first, "name": "New"}]

    run = ingest(client)

    assert (run["rows_kept"], run["rows_updated"], run["records_rejected"]) == (0, 1, 1)
    assert client.get(f"/crew/{first['id']}").json()["name"] == "New"


def test_null_launches_are_no_launches(client: TestClient, upstream: FakeUpstream) -> None:
    upstream.records = [{**r, "launches": None} for r in upstream.records]

    run = ingest(client)

    assert (run["status"], run["rows_inserted"], run["records_rejected"]) == ("succeeded", 18, 0)
    assert client.get(f"/crew/{upstream.records[0]['id']}").json()["launches"] == []


def test_more_rejects_than_the_fraction_fail_the_run_and_keep_the_table(
    client: TestClient, upstream: FakeUpstream
) -> None:
    ingest(client)
    before = crew_checksum()
    upstream.records = [{**r, "image": ""} if i < 10 else r for i, r in enumerate(upstream.records)]

    run = ingest(client)

    assert (run["status"], run["records_rejected"]) == ("failed", 10)
    assert run["error"] == (
        "refusing to load: 10 of 18 records rejected "
        "(more than INGEST_MAX_REJECT_FRACTION=0.5); the upstream may have changed shape"
    )
    assert (run["rows_updated"], run["rows_kept"], run["rows_deleted"]) == (0, 0, 0)
    assert crew_checksum() == before


def test_stored_rejects_are_capped_and_the_rest_counted(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "INGEST_MAX_REJECTS_PER_RUN", 3)
    upstream.records = upstream.records + [{"id": ID.format(i)} for i in range(7)]

    run = ingest(client)

    assert (run["status"], run["records_rejected"], run["rejects_not_stored"]) == (
        "succeeded",
        7,
        4,
    )
    assert len(rejects_of(client, run)) == 3
    assert query_one("SELECT count(*) FROM ingest_rejects")[0] == 3


@pytest.mark.parametrize(
    ("part", "whole", "fraction", "more"),
    [(29, 100, 0.29, False), (30, 100, 0.29, True), (5, 10, 0.5, False), (1, 0, 0.0, True)],
)
def test_fractions_compare_exactly(part: int, whole: int, fraction: float, more: bool) -> None:
    assert 29 > 0.29 * 100  # the float comparison this replaces got the boundary wrong
    assert load.more_than(part, whole, fraction) is more


@pytest.mark.parametrize(("vanished", "status"), [(29, "succeeded"), (30, "failed")])
def test_the_mass_delete_guard_at_its_boundary(
    client: TestClient,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    vanished: int,
    status: str,
) -> None:
    monkeypatch.setattr(settings, "INGEST_MAX_DELETE_FRACTION", 0.29)
    monkeypatch.setattr(settings, "INGEST_PAGE_SIZE", 50)
    upstream.records = SyntheticRecords(100)
    ingest(client)
    upstream.records = SyntheticRecords(100 - vanished)

    run = ingest(client)

    assert run["status"] == status, run["error"]
    assert client.get("/crew").json()["total"] == (71 if status == "succeeded" else 100)


def test_a_database_error_shows_no_sql_on_the_api(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "KEEP", "SELECT no_such_column FROM crew WHERE %s IS NULL")
    upstream.records = [{**upstream.records[0], "image": ""}, *upstream.records[1:]]

    run = ingest(client)

    assert run["status"] == "failed"
    assert run["error"] == (
        "database error while loading (UndefinedColumn, SQLSTATE 42703); details in the log"
    )
