"""Webhook delivery across real service processes: a SIGKILL between a run's commit and its
delivery, and a database outage while an attempt is in flight, lose nothing and send nothing
twice. The outage happens on a PostgreSQL server of the test's own (tests/pg_harness.py)."""

import threading
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import query_one, run_row, wait_until
from tests.fake_upstream import FakeUpstream
from tests.pg_harness import OwnPostgres, wait_for
from tests.test_processes import UVICORN, Server
from tests.test_self_healing import Database
from tests.webhook_receiver import Receiver, Step, new_secret, running_receiver


@pytest.fixture(name="own_pg", scope="module")
def own_pg_fixture() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    yield server
    server.destroy()


@pytest.fixture(name="db")
def db_fixture(own_pg: OwnPostgres) -> Database:
    return Database(own_pg.create_database("crew_etl_webhooks"))


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[Receiver]:
    with running_receiver(new_secret()) as receiver:
        yield receiver


def hook_env(receiver: Receiver, **extra: str) -> dict[str, str]:
    assert receiver.secret is not None
    return {
        "WEBHOOK_URL": receiver.url,
        "WEBHOOK_SECRET": receiver.secret,
        "WEBHOOK_EVENTS": "ingest.run.succeeded,ingest.schedule.paused,ingest.schedule.resumed",
        "WEBHOOK_RETRY_SCHEDULE_SECONDS": "0.1,0.1,0.1",
        "WEBHOOK_POLL_SECONDS": "0.05",
        **extra,
    }


@pytest.fixture(name="servers")
def servers_fixture(upstream: FakeUpstream) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(**env: str) -> Server:
        started.append(Server(UVICORN, upstream.url, **env))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def test_sigkill_between_the_runs_commit_and_its_delivery_loses_nothing(
    servers: Callable[..., Server], receiver: Receiver
) -> None:
    # This worker looks once at start, then not for an hour: the run commits, nothing is sent.
    first = servers(**hook_env(receiver, WEBHOOK_POLL_SECONDS="3600"))
    run_id = first.post("/ingest").json()["id"]
    wait_until(lambda: run_row(run_id).status == "succeeded")
    assert query_one("SELECT count(*) FROM webhook_outbox WHERE run_id = :id", id=run_id)[0] == 1
    first.stop()  # SIGKILL
    assert receiver.received == []

    servers(**hook_env(receiver))
    wait_until(lambda: delivered_count() == 1)
    [entry] = receiver.received
    assert entry.verified
    assert (entry.event["type"], entry.event["data"]["id"]) == ("ingest.run.succeeded", run_id)


def delivered_count() -> int:
    return int(query_one("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'")[0])


def test_a_database_outage_during_delivery_delays_but_loses_nothing(
    upstream: FakeUpstream, receiver: Receiver, db: Database, own_pg: OwnPostgres
) -> None:
    answer = threading.Event()
    receiver.script = [Step(wait_for=answer)]
    env = {"DATABASE_URL": db.url, **hook_env(receiver)}
    server = Server(UVICORN, upstream.url, **env)
    try:
        assert server.post("/schedule/pause").status_code == 200
        wait_for(lambda: len(receiver.received) == 1)  # the attempt is in flight
        own_pg.stop("fast")
        answer.set()  # the receiver answers 200 while the database is away
        wait_for(lambda: receiver.received[0].answered == 200)
        own_pg.start()

        wait_for(lambda: db.one("SELECT status FROM webhook_deliveries")[0] == "delivered")
        assert server.post("/schedule/resume").status_code == 200
        wait_for(
            lambda: (
                db.one("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'")[0] == 2
            )
        )
    finally:
        server.stop()
    events = [entry.event["type"] for entry in receiver.received]
    assert events == ["ingest.schedule.paused", "ingest.schedule.resumed"]  # each once
    assert all(entry.verified for entry in receiver.received)
    attempts = db.one("SELECT count(*), count(response_status) FROM webhook_attempts")
    assert attempts == (2, 2)
