"""A run that changes most of a large crew rebuilds it in a stage table and moves it into crew's
place: the same rows, versions and counts as an update in place, crew's indexes, triggers and
name bounds, writers held off, readers (snapshots included) never shown an empty crew."""

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import Session

from app.api.deps import crew_snapshot_connection
from app.api.status import read_summary, service_info
from app.config import settings
from app.db import get_engine
from app.ingest import bulk, rewrite, service
from app.main import app
from app.models import RunTrigger
from tests.conftest import crew_checksum, ingest, query_one, run_row, wait_until
from tests.fake_upstream import FakeUpstream, Fault, synthetic_crew
from tests.test_first_load import SHAPE, STAGES, execute, reading_crew
from tests.test_walk_start import UNCOVERED

MEMBERS = 300
CHANGED = range(200)  # the third run's first pages: all changed, so the run rebuilds
UNCHANGED = range(200, 250)
KEPT = 260  # a rejected record names it: kept as it was
NEW = range(300, 320)
RESTORED = 5  # gone in the second run, back (and changed) in the third
ACTIVE_AFTER = len(CHANGED) + len(UNCHANGED) + 1 + len(NEW)
TABLE_OID = "SELECT 'crew'::regclass::oid"
ROWS = """
SELECT id, name, status, agency, image, wikipedia, launches, created_at, updated_at, deleted_at
FROM crew ORDER BY id
"""
VERSIONS_BY_OP = "SELECT op, count(*) FROM crew_versions WHERE opened_run_id = :id GROUP BY op"
HOLDING_WRITERS = (
    "SELECT count(*) FROM pg_locks WHERE relation = 'crew'::regclass AND mode = 'ShareLock'"
)
PRIVILEGES = """
SELECT jsonb_agg(jsonb_build_array(pg_get_userbyid(a.grantee), a.privilege_type)
    ORDER BY a.grantee, a.privilege_type)
FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = 'crew'::regclass
"""
QUOTED_INDEX = (
    "SELECT indrelid = 'crew'::regclass FROM pg_index WHERE indexrelid = CAST(:name AS regclass)"
)
PENDING_LOCKS = "SELECT count(*) FROM pg_locks WHERE NOT granted"


def member_id(index: int) -> str:
    return f"{index:024x}"


def image_of(index: int) -> dict[str, str]:
    return {"id": member_id(index), "image": synthetic_crew(index)["image"]}


def third_listing() -> list[dict[str, Any]]:
    rejected = {**synthetic_crew(KEPT), "name": None}
    return [
        *(synthetic_crew(i, version=1) for i in CHANGED),
        *(synthetic_crew(i) for i in UNCHANGED),
        rejected,
        *(synthetic_crew(i) for i in NEW),
    ]


@pytest.fixture(name="loaded")
def loaded_fixture(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> FakeUpstream:
    """Crew after a first load of MEMBERS and a run that soft-deleted RESTORED; the upstream
    then serves third_listing(). Crews from 100 members up may be rebuilt."""
    monkeypatch.setattr(settings, "INGEST_PAGE_SIZE", 50)
    upstream.records = [synthetic_crew(i) for i in range(MEMBERS)]
    assert ingest(client)["status"] == "succeeded"
    upstream.records = [r for r in upstream.records if r["id"] != member_id(RESTORED)]
    assert ingest(client)["rows_deleted"] == 1
    monkeypatch.setattr(rewrite, "MIN_ACTIVE", 100)
    upstream.records = third_listing()
    return upstream


def crew_rows() -> dict[str, Any]:
    with get_engine().connect() as connection:
        return {row.id: row for row in connection.execute(text(ROWS))}


def assert_third_run(run: dict[str, Any], before: dict[str, Any]) -> None:
    """The third run's counts, rows and versions, whichever way it wrote them."""
    assert run["status"] == "succeeded", run["error"]
    counts = {k: run[f"rows_{k}"] for k in ("inserted", "updated", "unchanged", "deleted", "kept")}
    assert counts == {"inserted": 20, "updated": 200, "unchanged": 50, "deleted": 49, "kept": 1}
    with get_engine().connect() as connection:
        ops = dict(connection.execute(text(VERSIONS_BY_OP), {"id": run["id"]}).all())
    assert ops == {"insert": 20, "update": 199, "restore": 1, "delete": 49}
    after = crew_rows()
    written = {row.updated_at for row in after.values()} - {r.updated_at for r in before.values()}
    assert len(written) == 1  # every row the run wrote carries its one time
    listing = {r["id"]: r for r in third_listing() if r["name"]}
    for key, row in after.items():
        old = before.get(key)
        if old is not None:
            assert row.created_at == old.created_at
        if key in listing:
            record = listing[key]
            assert (row.name, row.agency, row.image, list(row.launches)) == (
                record["name"],
                record["agency"],
                record["image"],
                record["launches"],
            )
            assert row.deleted_at is None
            same = old is not None and old.deleted_at is None and old.name == record["name"]
            assert (row.updated_at == old.updated_at) if same else (row.updated_at in written)
        elif key == member_id(KEPT):
            assert row == old
        else:
            assert row.deleted_at is not None and row.updated_at in written
    assert len(after) == MEMBERS + len(NEW)
    assert query_one(UNCOVERED)[0] == 0  # name bounds cover every name in crew
    assert query_one(STAGES)[0] == 0


@pytest.mark.parametrize("rebuilt", [True, False], ids=["rebuilt", "in-place"])
def test_a_run_changing_most_of_crew_writes_what_an_update_in_place_writes(
    client: TestClient, loaded: FakeUpstream, monkeypatch: pytest.MonkeyPatch, rebuilt: bool
) -> None:
    if not rebuilt:
        monkeypatch.setattr(rewrite, "MIN_ACTIVE", 10**9)
    shape, table, before = query_one(SHAPE), query_one(TABLE_OID)[0], crew_rows()

    run = ingest(client)

    assert_third_run(run, before)
    assert (query_one(TABLE_OID)[0] != table) == rebuilt
    assert query_one(SHAPE) == shape
    page = client.get("/crew", params={"name": " v1", "sort": "-agency", "count": "exact"}).json()
    assert page["total"] == len(CHANGED)
    again = ingest(client)
    assert (again["rows_inserted"], again["rows_updated"], again["rows_deleted"]) == (0, 0, 0)
    # The triggers came along: a write outside a run widens the bounds.
    execute("UPDATE crew SET name = 'Zyx Qwv' WHERE id = :id", id=member_id(210))
    assert client.get("/crew", params={"name": "qwv", "count": "exact"}).json()["total"] == 1


def test_a_dry_run_of_a_change_to_most_of_crew_lists_it_and_holds_no_writer_off(
    client: TestClient, loaded: FakeUpstream
) -> None:
    """A dry run is rolled back: it stays in place, where a writer of a row it does not change
    goes on at once (a rebuild would hold every writer off to its end). It writes the member
    only a rejected record names."""
    writes: list[str] = []

    def write(_: FakeUpstream) -> None:
        if len(writes) == 3:  # past the pages where a run decides
            execute(
                "SET LOCAL lock_timeout = '1s'; "
                "UPDATE crew SET image = 'https://example.org/x.png' WHERE id = :id",
                id=member_id(KEPT),
            )
        writes.append("page")

    loaded.between_requests = write
    table, checksum = query_one(TABLE_OID)[0], crew_checksum()

    run = ingest(client, dry_run="true")

    assert (run["status"], run["rows_updated"], run["rows_deleted"]) == ("succeeded", 200, 49)
    assert len(writes) > 3
    execute("UPDATE crew SET image = :image WHERE id = :id", **image_of(KEPT))
    assert (query_one(TABLE_OID)[0], crew_checksum()) == (table, checksum)
    changes = client.get(f"/ingest/{run['id']}/changes", params={"limit": 1}).json()
    assert changes["total"] == 20 + 200 + 49
    assert query_one(STAGES)[0] == 0


def test_a_run_failing_after_it_began_to_rebuild_leaves_crew_as_it_was(
    client: TestClient, loaded: FakeUpstream
) -> None:
    loaded.fail(4, Fault("status", status=404))
    table, checksum = query_one(TABLE_OID)[0], crew_checksum()

    run = ingest(client)

    assert run["status"] == "failed"
    assert (query_one(TABLE_OID)[0], crew_checksum()) == (table, checksum)
    assert query_one(STAGES)[0] == 0


def test_a_writer_of_crew_during_a_rebuild_waits_and_its_row_is_kept(
    client: TestClient, loaded: FakeUpstream
) -> None:
    written = threading.Event()

    def write() -> None:
        execute(
            "UPDATE crew SET image = 'https://example.org/x.png' WHERE id = :id", id=member_id(210)
        )
        written.set()

    def start_writer(_: FakeUpstream) -> None:
        if query_one(HOLDING_WRITERS)[0] and not written.is_set():  # the run is rebuilding
            loaded.between_requests = None
            threading.Thread(target=write, daemon=True).start()
            wait_until(lambda: query_one(PENDING_LOCKS)[0] > 0)

    loaded.between_requests = start_writer
    table = query_one(TABLE_OID)[0]

    run = ingest(client)

    assert written.wait(30)
    assert query_one(TABLE_OID)[0] != table  # rebuilt, and the write came after it
    image = query_one("SELECT image FROM crew WHERE id = :id", id=member_id(210))[0]
    assert image == "https://example.org/x.png"
    assert run["rows_updated"] == 200


def test_a_rebuild_whose_lock_is_never_granted_writes_its_rows_into_crew(
    client: TestClient, loaded: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "LOCK_TIMEOUT", "50ms")
    monkeypatch.setattr(bulk, "LOCK_TRIES", 2)
    shape, table, before = query_one(SHAPE), query_one(TABLE_OID)[0], crew_rows()
    with reading_crew():
        run = ingest(client)

    assert_third_run(run, before)
    assert (query_one(TABLE_OID)[0], query_one(SHAPE)) == (table, shape)


def test_a_rebuild_of_the_name_bounds_waiting_for_a_rebuilding_run_lets_it_move_in(
    client: TestClient, loaded: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """crew_name_trigrams_rebuild() waits for the run's writes; it must not also hold a lock the
    move needs (PostgreSQL 15 locked an SQL function's tables before running its LOCK: the move
    deadlocked, and the run wrote its rows into crew instead). Migration 0017."""
    move_in, moved, rebuilt = bulk.move_in, [], threading.Event()

    def rebuild() -> None:
        execute("SELECT crew_name_trigrams_rebuild()")
        rebuilt.set()

    def rebuild_then_move_in(cursor: Any, staged: bulk.Stage) -> bool:
        threading.Thread(target=rebuild, daemon=True).start()
        wait_until(lambda: query_one(PENDING_LOCKS)[0] > 0)
        moved.append(move_in(cursor, staged))
        return moved[-1]

    monkeypatch.setattr(bulk, "move_in", rebuild_then_move_in)
    table = query_one(TABLE_OID)[0]

    run = ingest(client)

    assert (run["status"], run["rows_updated"]) == ("succeeded", 200), run["error"]
    assert moved == [True]
    assert query_one(TABLE_OID)[0] != table
    assert rebuilt.wait(30)
    assert query_one(UNCOVERED)[0] == 0


def test_a_run_cancelled_while_its_move_waits_stops_there(
    client: TestClient, loaded: FakeUpstream, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancelled wait for crew's lock ends the run: no merge of its rows into crew first."""
    monkeypatch.setattr(bulk, "LOCK_TIMEOUT", "60s")
    merged: list[str] = []
    merge_rows = bulk.merge_rows

    def spy(cursor: Any, staged: bulk.Stage, reason: str) -> None:
        merged.append(reason)
        merge_rows(cursor, staged, reason)

    monkeypatch.setattr(bulk, "merge_rows", spy)
    table, checksum = query_one(TABLE_OID)[0], crew_checksum()
    with reading_crew():
        run = service.create_run(session, RunTrigger.api)
        worker = threading.Thread(target=service.execute_run, args=(run.id,))
        worker.start()
        wait_until(lambda: query_one(PENDING_LOCKS)[0] > 0)  # the move waits for the reader
        assert client.post(f"/ingest/{run.id}/cancel").status_code == 202
        worker.join(timeout=30)

    assert run_row(run.id)[:2] == ("cancelled", "cancelled on request")
    assert merged == []
    assert (query_one(TABLE_OID)[0], crew_checksum()) == (table, checksum)


def test_a_snapshot_begun_during_the_move_sees_the_rebuilt_crew_not_an_empty_one(
    client: TestClient, loaded: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A REPEATABLE READ snapshot taken while the move holds crew, then used on crew, would find
    the new table's rows too new to see. History and the status page lock crew first."""
    seen: dict[str, int] = {}
    move_in = bulk.move_in

    def count_in_snapshot() -> None:
        with crew_snapshot_connection() as connection:
            query = "SELECT count(*) FROM crew WHERE deleted_at IS NULL"
            seen["snapshot"] = connection.exec_driver_sql(query).scalar_one()

    def status_page() -> None:
        seen["status"] = read_summary(app, service_info(app)).crew.total

    def move_in_then_read(cursor: Any, staged: bulk.Stage) -> bool:
        moved = move_in(cursor, staged)  # crew is locked until the run commits
        for read in (count_in_snapshot, status_page):
            threading.Thread(target=read, daemon=True).start()
        wait_until(lambda: query_one(PENDING_LOCKS)[0] >= 2)
        return moved

    monkeypatch.setattr(bulk, "move_in", move_in_then_read)

    run = ingest(client)

    assert run["status"] == "succeeded", run["error"]
    wait_until(lambda: len(seen) == 2)
    assert seen == {"snapshot": ACTIVE_AFTER, "status": ACTIVE_AFTER}


@pytest.fixture(name="own_column")
def own_column_fixture() -> Iterator[None]:
    execute("ALTER TABLE crew ADD COLUMN note text")
    yield
    execute("ALTER TABLE crew DROP COLUMN note")


@pytest.mark.usefixtures("own_column")
def test_a_crew_with_a_column_of_its_own_is_updated_in_place_and_keeps_it(
    client: TestClient, loaded: FakeUpstream
) -> None:
    execute("UPDATE crew SET note = 'ours' WHERE id = :id", id=member_id(7))
    table, before = query_one(TABLE_OID)[0], crew_rows()

    run = ingest(client)

    assert_third_run(run, before)
    assert query_one(TABLE_OID)[0] == table
    assert query_one("SELECT note FROM crew WHERE id = :id", id=member_id(7))[0] == "ours"


# What an operator may have done to crew that a rebuilt table would not carry: (set up, what
# must still hold after the run, undo).
OPERATORS_CHANGES = {
    "not-valid-check": (
        f"UPDATE crew SET image = 'http://example.org/old.png' WHERE id = '{member_id(KEPT)}'; "
        "ALTER TABLE crew ADD CONSTRAINT image_https "
        "CHECK (image IS NULL OR image LIKE 'https:%') NOT VALID",
        "SELECT NOT convalidated FROM pg_constraint WHERE conname = 'image_https'",
        "ALTER TABLE crew DROP CONSTRAINT image_https",
    ),
    "row-trigger": (
        "CREATE TABLE crew_audit (id text); CREATE FUNCTION crew_audit() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN INSERT INTO crew_audit VALUES (NEW.id); RETURN NULL; END $$;"
        "CREATE TRIGGER crew_audit AFTER INSERT OR UPDATE ON crew "
        "FOR EACH ROW EXECUTE FUNCTION crew_audit()",
        "SELECT count(*) = 20 + 200 + 49 FROM crew_audit",
        "DROP TRIGGER crew_audit ON crew; DROP FUNCTION crew_audit; DROP TABLE crew_audit",
    ),
    "view": (
        "CREATE VIEW crew_names AS SELECT id, name FROM crew",
        f"SELECT count(*) = {MEMBERS + len(NEW)} FROM crew_names",
        "DROP VIEW crew_names",
    ),
    "statistics-target": (
        "ALTER TABLE crew ALTER COLUMN agency SET STATISTICS 1000",
        "SELECT attstattarget = 1000 FROM pg_attribute "
        "WHERE attrelid = 'crew'::regclass AND attname = 'agency'",
        "ALTER TABLE crew ALTER COLUMN agency SET STATISTICS -1",
    ),
    "n-distinct": (
        "ALTER TABLE crew ALTER COLUMN status SET (n_distinct = 7)",
        "SELECT attoptions @> '{n_distinct=7}' FROM pg_attribute "
        "WHERE attrelid = 'crew'::regclass AND attname = 'status'",
        "ALTER TABLE crew ALTER COLUMN status RESET (n_distinct)",
    ),
    "toast-setting": (
        "ALTER TABLE crew SET (toast.autovacuum_enabled = false)",
        "SELECT t.reloptions = '{autovacuum_enabled=false}' FROM pg_class c "
        "JOIN pg_class t ON t.oid = c.reltoastrelid WHERE c.oid = 'crew'::regclass",
        "ALTER TABLE crew RESET (toast.autovacuum_enabled)",
    ),
    "index-comment": (
        "COMMENT ON INDEX ix_crew_status_id IS 'ours'",
        "SELECT obj_description('ix_crew_status_id'::regclass, 'pg_class') = 'ours'",
        "COMMENT ON INDEX ix_crew_status_id IS NULL",
    ),
    "policy": (
        "CREATE POLICY crew_all ON crew USING (true)",
        "SELECT count(*) = 1 FROM pg_policy WHERE polrelid = 'crew'::regclass",
        "DROP POLICY crew_all ON crew",
    ),
    "primary-key-option": (
        "ALTER INDEX crew_pkey SET (fillfactor = 70)",
        "SELECT reloptions = '{fillfactor=70}' FROM pg_class WHERE oid = 'crew_pkey'::regclass",
        "ALTER INDEX crew_pkey RESET (fillfactor)",
    ),
    "trigger-comment": (
        "COMMENT ON TRIGGER crew_name_trigrams_on_insert ON crew IS 'ours'",
        "SELECT obj_description(oid, 'pg_trigger') = 'ours' FROM pg_trigger "
        "WHERE tgname = 'crew_name_trigrams_on_insert'",
        "COMMENT ON TRIGGER crew_name_trigrams_on_insert ON crew IS NULL",
    ),
    "clustered": (
        "ALTER TABLE crew CLUSTER ON ix_crew_status_id",
        "SELECT indisclustered FROM pg_index WHERE indexrelid = 'ix_crew_status_id'::regclass",
        "ALTER TABLE crew SET WITHOUT CLUSTER",
    ),
}


@pytest.fixture(name="operators_change", params=sorted(OPERATORS_CHANGES))
def operators_change_fixture(request: pytest.FixtureRequest) -> Iterator[str]:
    set_up, holds, undo = OPERATORS_CHANGES[request.param]
    yield set_up
    try:
        assert query_one(holds)[0], request.param
    finally:
        execute(undo)


def test_a_crew_an_operator_changed_is_updated_in_place_and_keeps_the_change(
    client: TestClient, loaded: FakeUpstream, operators_change: str
) -> None:
    execute(operators_change)
    table, before = query_one(TABLE_OID)[0], crew_rows()

    run = ingest(client)

    assert_third_run(run, before)
    assert query_one(TABLE_OID)[0] == table


def test_a_crew_with_a_dropped_column_is_rebuilt(client: TestClient, loaded: FakeUpstream) -> None:
    """A dropped column stays in the catalog (PostgreSQL 15 gives it a statistics target of 0):
    it is no setting of the operator's to keep."""
    execute("ALTER TABLE crew ADD COLUMN note text")
    execute("ALTER TABLE crew DROP COLUMN note")
    table, before = query_one(TABLE_OID)[0], crew_rows()

    run = ingest(client)

    assert_third_run(run, before)
    assert query_one(TABLE_OID)[0] != table


def test_a_rebuild_keeps_the_mode_of_crews_triggers(
    client: TestClient, loaded: FakeUpstream
) -> None:
    execute("ALTER TABLE crew ENABLE ALWAYS TRIGGER crew_name_trigrams_on_update")
    table = query_one(TABLE_OID)[0]

    run = ingest(client)

    assert run["rows_updated"] == 200
    assert query_one(TABLE_OID)[0] != table
    modes = "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'crew'::regclass"
    with get_engine().connect() as connection:
        assert dict(connection.execute(text(modes)).all()) == {
            "crew_name_trigrams_on_insert": "O",
            "crew_name_trigrams_on_update": "A",
        }


def test_a_rebuild_carries_an_index_whose_name_needs_quotes(
    client: TestClient, loaded: FakeUpstream
) -> None:
    execute('CREATE INDEX "crew by ""image""" ON crew (image)')
    table = query_one(TABLE_OID)[0]
    try:
        run = ingest(client)

        assert run["rows_updated"] == 200
        assert query_one(TABLE_OID)[0] != table
        assert query_one(QUOTED_INDEX, name='"crew by ""image"""')[0]
    finally:
        execute('DROP INDEX IF EXISTS "crew by ""image"""')


def test_a_rebuild_leaves_crews_privileges_as_they_were(
    client: TestClient, loaded: FakeUpstream
) -> None:
    """The stage is a new table: the role's default privileges for new tables apply to it."""
    role = f"crew_reader_{uuid.uuid4().hex[:8]}"
    execute(f"CREATE ROLE {role}")
    execute(f"GRANT SELECT ON crew TO {role}")
    execute(f"ALTER DEFAULT PRIVILEGES GRANT SELECT, DELETE ON TABLES TO {role}")
    try:
        privileges = query_one(PRIVILEGES)[0]
        table = query_one(TABLE_OID)[0]

        run = ingest(client)

        assert run["rows_updated"] == 200
        assert query_one(TABLE_OID)[0] != table
        assert query_one(PRIVILEGES)[0] == privileges
    finally:
        execute(f"ALTER DEFAULT PRIVILEGES REVOKE ALL ON TABLES FROM {role}")
        execute(f"REVOKE ALL ON crew FROM {role}")
        execute(f"DROP ROLE {role}")


def test_an_index_that_will_not_build_on_the_stage_sends_the_rows_into_crew(
    client: TestClient, loaded: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For what the catalog checks did not foresee: the run's rows are merged into crew."""
    on_stage = bulk.on_stage

    def failing_last(definition: str, table: str, number: int) -> str:
        staged = on_stage(definition, table, number)
        return staged.replace("(", "(no_such_column, ", 1) if "status" in staged else staged

    monkeypatch.setattr(bulk, "on_stage", failing_last)
    shape, table, before = query_one(SHAPE), query_one(TABLE_OID)[0], crew_rows()

    run = ingest(client)

    assert_third_run(run, before)
    assert (query_one(TABLE_OID)[0], query_one(SHAPE)) == (table, shape)
