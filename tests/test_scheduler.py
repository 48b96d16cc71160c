"""Scheduled ingest: one run per interval across replicas; a busy tick skips quietly."""

from collections.abc import Callable

from sqlmodel import Session

from app.ingest import service
from app.models import RunTrigger
from app.scheduler import trigger_scheduled_run
from tests.conftest import query_one, wait_until
from tests.test_processes import Server, servers_fixture  # noqa: F401  (the fixture)


def test_two_replicas_run_exactly_one_ingest_per_interval(
    servers: Callable[..., Server],
) -> None:
    replicas = [servers(INGEST_INTERVAL_SECONDS="1"), servers(INGEST_INTERVAL_SECONDS="1")]
    # three slots started and the first two finished (a stop may cut the newest short)
    finished = "SELECT count(*) FROM ingest_runs WHERE finished_at IS NOT NULL"
    wait_until(lambda: query_one("SELECT count(*) FROM ingest_runs")[0] >= 3)
    wait_until(lambda: query_one(finished)[0] >= 2)
    for replica in replicas:
        replica.stop()

    runs, first, last, succeeded = query_one(
        "SELECT count(*), min(schedule_slot), max(schedule_slot), "
        "count(*) FILTER (WHERE status = 'succeeded') "
        "FROM ingest_runs WHERE trigger = 'schedule'"
    )
    slots = query_one("SELECT count(DISTINCT schedule_slot) FROM ingest_runs")[0]
    assert runs >= 3
    assert slots == runs  # no interval twice (a tick while a run is still active is skipped)
    assert succeeded >= runs - 1  # the last one may have been cut short by the stop
    assert query_one("SELECT count(*) FROM ingest_runs WHERE trigger <> 'schedule'")[0] == 0


def test_a_tick_while_a_run_is_active_skips_quietly(session: Session) -> None:
    active = service.create_run(session, RunTrigger.api)

    assert trigger_scheduled_run(slot=12345) is None
    assert query_one("SELECT count(*), max(id) FROM ingest_runs") == (1, active.id)


def test_a_slot_already_taken_is_not_run_again(session: Session) -> None:
    taken = service.create_run(session, RunTrigger.schedule, schedule_slot=777)
    service.cancel_run(session, taken.id or 0)  # finished: only the slot is still taken

    assert trigger_scheduled_run(slot=777) is None
    assert query_one("SELECT count(*) FROM ingest_runs")[0] == 1
