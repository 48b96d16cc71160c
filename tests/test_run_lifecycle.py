"""The run record's fence, heartbeats, reaping and deadlines, in one process on the test database.

Process-level faults (kills, pauses, database restarts) are in test_self_healing.py.
"""

import threading
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.config import settings
from app.db import background_engine, get_engine
from app.ingest import registry, runs, service
from app.ingest.pipeline import RunCounts
from app.models import IngestRun, RunTrigger
from tests.conftest import crew_checksum, ingest, run_row
from tests.fake_upstream import FakeUpstream, Fault


@pytest.fixture(name="running")
def running_fixture(session: Session) -> Iterator[IngestRun]:
    """A run this process created and started, as execute_run would have."""
    run = service.create_run(session, RunTrigger.api)
    assert run.id is not None and runs.mark_running(run.id)
    yield run
    registry.unregister(run.id)


def abandon(run_id: int, seconds: int = 3600) -> None:
    """Make the run's owner look silent for `seconds` (on the database's clock)."""
    with get_engine().begin() as connection:
        connection.exec_driver_sql(
            "UPDATE ingest_runs SET heartbeat_at = heartbeat_at - make_interval(secs => %s) "
            "WHERE id = %s",
            (seconds, run_id),
        )


def test_a_silent_run_is_reaped_with_the_time_of_its_last_heartbeat(running: IngestRun) -> None:
    abandon(running.id or 0)

    assert runs.reap_stale(settings.INGEST_STALE_AFTER_SECONDS) == [running.id]
    status, error, _ = run_row(running.id or 0)
    assert status == "failed"
    assert error.startswith("abandoned: no heartbeat since ") and error.endswith("Z")


def test_a_live_run_is_not_reaped(running: IngestRun) -> None:
    assert runs.reap_stale(settings.INGEST_STALE_AFTER_SECONDS) == []
    assert run_row(running.id or 0).status == "running"


def test_a_reaped_run_cannot_commit_and_its_data_rolls_back(
    running: IngestRun, upstream: FakeUpstream
) -> None:
    before = crew_checksum()
    abandon(running.id or 0)
    runs.reap_stale(settings.INGEST_STALE_AFTER_SECONDS)
    connection = background_engine().raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("UPDATE crew SET name = 'late writer'")
        with pytest.raises(runs.RunLost):
            runs.commit_succeeded(cursor, running.id or 0, RunCounts(), "{}")
        connection.rollback()
    finally:
        connection.close()

    assert crew_checksum() == before
    assert run_row(running.id or 0).error.startswith("abandoned")


def test_a_late_failure_does_not_overwrite_the_record_of_the_process_that_ended_the_run(
    running: IngestRun,
) -> None:
    abandon(running.id or 0)
    runs.reap_stale(settings.INGEST_STALE_AFTER_SECONDS)
    recorded = run_row(running.id or 0)

    service.finish_unsuccessful(
        running.id or 0,
        service.RunStatus.failed,
        "too late",
        RunCounts(),
        service.validate.SchemaDrift(),
    )

    assert run_row(running.id or 0) == recorded


def test_another_owner_cannot_touch_the_run(running: IngestRun) -> None:
    with get_engine().begin() as connection:  # as if another process had created it
        connection.exec_driver_sql(
            "UPDATE ingest_runs SET owner_id = owner_id + 1 WHERE id = %s", (running.id,)
        )

    assert runs.heartbeat([running.id or 0]) == {}
    with pytest.raises(runs.RunLost):
        connection = background_engine().raw_connection()
        try:
            runs.record_progress(connection.cursor(), running.id or 0, {"pages_fetched": 1})
        finally:
            connection.close()


def test_the_heartbeat_keeps_a_run_fresh_and_carries_a_cancel_request(
    running: IngestRun, session: Session
) -> None:
    abandon(running.id or 0, seconds=30)
    assert runs.heartbeat([running.id or 0]) == {running.id: False}
    assert runs.reap_stale(settings.INGEST_STALE_AFTER_SECONDS) == []

    service.cancel_run(session, running.id or 0)
    assert runs.heartbeat([running.id or 0]) == {running.id: True}


def test_a_queued_run_nobody_starts_is_reaped_and_frees_the_guard(session: Session) -> None:
    queued = service.create_run(session, RunTrigger.api)
    with get_engine().begin() as connection:
        connection.exec_driver_sql(
            "UPDATE ingest_runs SET created_at = created_at - interval '1 hour' WHERE id = %s",
            (queued.id,),
        )

    fresh = service.create_run(session, RunTrigger.api)  # reaps first

    assert run_row(queued.id or 0).status == "failed"
    assert fresh.id != queued.id


def test_a_run_past_its_deadline_fails_naming_the_page(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(client)
    before = crew_checksum()
    monkeypatch.setattr(settings, "INGEST_RUN_TIMEOUT_SECONDS", 2)
    upstream.fail(2, Fault("trickle", seconds=0.05))

    started = time.monotonic()
    run = ingest(client)

    assert time.monotonic() - started < 10
    assert run["status"] == "failed"
    assert run["error"] == "timed out: the run passed INGEST_RUN_TIMEOUT_SECONDS (2 s) on page 2"
    assert crew_checksum() == before


def test_a_run_blocked_on_a_lock_is_stopped_at_its_deadline(
    client: TestClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(client)
    before = crew_checksum()
    monkeypatch.setattr(settings, "INGEST_RUN_TIMEOUT_SECONDS", 2)
    released, locked = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with get_engine().connect() as connection, connection.begin():
            connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
            connection.exec_driver_sql("LOCK TABLE crew IN ACCESS EXCLUSIVE MODE")
            locked.set()
            released.wait(30)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(30)
        started = time.monotonic()
        run = ingest(client)
        took = time.monotonic() - started
    finally:
        released.set()
        holder.join()

    assert run["status"] == "failed" and run["error"].startswith("timed out:"), run
    assert took < 15
    assert crew_checksum() == before
