"""A first load into an empty crew: built in a stage table and moved into crew's place with
crew's indexes, constraint, triggers and name bounds; or inserted into crew when the move cannot
be made (crew gained rows, or its lock is never granted)."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.config import settings
from app.db import get_engine
from app.ingest import bulk
from tests.conftest import ingest, query_one, wait_until
from tests.fake_upstream import FakeUpstream, synthetic_crew
from tests.test_walk_start import BOUNDS, UNCOVERED

SHAPE = """
SELECT
    (SELECT jsonb_agg(jsonb_build_array(indexname, indexdef) ORDER BY indexname)
     FROM pg_indexes WHERE tablename = 'crew'),
    (SELECT jsonb_agg(pg_get_triggerdef(oid) ORDER BY tgname)
     FROM pg_trigger WHERE tgrelid = 'crew'::regclass AND NOT tgisinternal),
    (SELECT jsonb_agg(conname ORDER BY conname) FROM pg_constraint
     WHERE conrelid = 'crew'::regclass)
"""
STAGES = "SELECT count(*) FROM pg_class WHERE relname LIKE 'crew_load_%'"

MEMBERS = 120


@pytest.fixture(name="members")
def members_fixture(upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> FakeUpstream:
    upstream.records = [synthetic_crew(i) for i in range(MEMBERS)]
    monkeypatch.setattr(settings, "INGEST_PAGE_SIZE", 50)
    return upstream


def execute(sql: str, **params: Any) -> None:
    with get_engine().begin() as connection:
        connection.execute(text(sql), params)


@contextmanager
def reading_crew() -> Iterator[None]:
    """A long read of crew in another transaction, holding its lock until the block ends."""
    reading, done = threading.Event(), threading.Event()

    def reader() -> None:
        with get_engine().connect() as connection, connection.begin():
            connection.execute(text("SELECT count(*) FROM crew"))
            reading.set()
            done.wait(60)

    thread = threading.Thread(target=reader)
    thread.start()
    assert reading.wait(10)
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_a_first_load_moves_in_with_crews_indexes_triggers_and_name_bounds(
    client: TestClient, members: FakeUpstream
) -> None:
    shape = query_one(SHAPE)

    run = ingest(client)

    assert (run["status"], run["rows_inserted"]) == ("succeeded", MEMBERS), run["error"]
    assert query_one(SHAPE) == shape
    assert query_one(STAGES)[0] == 0
    assert query_one("SELECT count(*) FROM crew_versions WHERE op = 'insert'")[0] == MEMBERS
    page = client.get("/crew", params={"name": "vic", "sort": "name", "limit": 100}).json()
    expected = sorted(r["name"] for r in members.records if "vic" in r["name"].lower())
    assert [m["name"] for m in page["items"]] == expected
    loaded = query_one(BOUNDS)[0]  # widened from the members as the run was given them
    assert query_one(UNCOVERED)[0] == 0
    execute("SELECT crew_name_trigrams_rebuild()")
    assert query_one(BOUNDS)[0] == loaded  # as the rows in crew say, in every order
    # The triggers moved in with the table: a write outside a run widens the bounds.
    execute("UPDATE crew SET name = 'Zyx Qwv' WHERE id = :id", id=f"{3:024x}")
    page = client.get("/crew", params={"name": "qwv", "sort": "name"}).json()
    assert [m["name"] for m in page["items"]] == ["Zyx Qwv"]
    assert ingest(client)["rows_updated"] == 1  # the upstream's name again, on the plain path


def test_a_row_written_into_crew_during_a_first_load_keeps_the_run_correct(
    client: TestClient, members: FakeUpstream
) -> None:
    outsider = f"{10**6:024x}"

    def write(_: FakeUpstream) -> None:
        if query_one("SELECT count(*) FROM crew")[0] == 0:
            execute(
                "INSERT INTO crew (id, name, status) VALUES (:id, 'Out Sider', 'active')",
                id=outsider,
            )

    members.between_requests = write

    run = ingest(client, allow_mass_delete="true")

    assert (run["status"], run["rows_inserted"]) == ("succeeded", MEMBERS), run["error"]
    assert run["rows_deleted"] == 1  # not in the listing: soft-deleted, as on the plain path
    assert query_one("SELECT count(*) FROM crew WHERE deleted_at IS NULL")[0] == MEMBERS
    deleted = query_one("SELECT deleted_at IS NOT NULL FROM crew WHERE id = :id", id=outsider)
    assert deleted[0]
    assert query_one(STAGES)[0] == 0


def test_a_first_load_whose_lock_is_never_granted_inserts_its_rows(
    client: TestClient, members: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "LOCK_TIMEOUT", "50ms")
    monkeypatch.setattr(bulk, "LOCK_TRIES", 2)
    shape = query_one(SHAPE)
    with reading_crew():
        run = ingest(client)

    assert (run["status"], run["rows_inserted"]) == ("succeeded", MEMBERS), run["error"]
    assert query_one("SELECT count(*) FROM crew")[0] == MEMBERS
    assert query_one(SHAPE) == shape
    assert query_one(STAGES)[0] == 0


def test_a_rebuild_of_the_name_bounds_during_a_first_load_waits_for_its_rows(
    client: TestClient, members: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load's bounds commit before its rows are in crew: a rebuild run between the two
    would drop them and see no row to widen for. It waits for the load instead."""
    move_in, rebuilt = bulk.move_in, threading.Event()

    def rebuild() -> None:
        execute("SELECT crew_name_trigrams_rebuild()")
        rebuilt.set()

    def rebuild_then_move_in(cursor: Any, staged: bulk.Stage) -> bool:
        threading.Thread(target=rebuild, daemon=True).start()
        wait_until(lambda: query_one("SELECT count(*) FROM pg_locks WHERE NOT granted")[0] > 0)
        assert not rebuilt.is_set()  # waiting on the load's lock, not done before the move
        return move_in(cursor, staged)

    monkeypatch.setattr(bulk, "move_in", rebuild_then_move_in)

    run = ingest(client)

    assert (run["status"], run["rows_inserted"]) == ("succeeded", MEMBERS), run["error"]
    assert rebuilt.wait(30)
    assert query_one(UNCOVERED)[0] == 0
    page = client.get("/crew", params={"name": "vic", "sort": "-agency", "limit": 100}).json()
    assert len(page["items"]) == sum("vic" in r["name"].lower() for r in members.records)
