"""Webhooks end to end in the app's process: real runs, the real outbox in PostgreSQL, the
delivery worker, and a real receiver on 127.0.0.1 that verifies every signature with the
`standardwebhooks` package. Retry waits are cut to milliseconds; nothing is timed."""

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from app.cli import cli
from app.config import WEBHOOK_EVENT_TYPES, settings
from app.db import get_engine
from app.main import app
from app.notify.worker import DeliveryWorker
from app.schedule_state import change
from tests.conftest import ingest, query_one, wait_until
from tests.fake_upstream import FakeUpstream, free_port
from tests.webhook_receiver import Receiver, Step, new_secret, running_receiver

FAST_RETRIES = [0.05] * 7  # the spec's eight attempts, without the hours between them


@pytest.fixture(name="receiver")
def receiver_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    secret = new_secret()
    with running_receiver(secret) as receiver:
        monkeypatch.setattr(settings, "WEBHOOK_URL", [receiver.url])
        monkeypatch.setattr(settings, "WEBHOOK_SECRET", secret)
        monkeypatch.setattr(settings, "WEBHOOK_EVENTS", list(WEBHOOK_EVENT_TYPES))
        monkeypatch.setattr(settings, "WEBHOOK_RETRY_SCHEDULE_SECONDS", FAST_RETRIES)
        monkeypatch.setattr(settings, "WEBHOOK_POLL_SECONDS", 0.02)
        monkeypatch.setattr(settings, "WEBHOOK_TIMEOUT_SECONDS", 1.0)
        yield receiver


@pytest.fixture(name="hooked")
def hooked_fixture(receiver: Receiver) -> Iterator[TestClient]:
    """The app with its delivery worker running, sending to the receiver."""
    with TestClient(app) as client:
        yield client


def delivery_rows() -> list[Any]:
    with get_engine().connect() as connection:
        sql = "SELECT id, msg_id, event_type, status, attempts FROM webhook_deliveries ORDER BY id"
        return list(connection.execute(text(sql)).all())


def attempts_of(delivery_id: int) -> list[Any]:
    with get_engine().connect() as connection:
        sql = (
            "SELECT attempt, response_status, error FROM webhook_attempts "
            "WHERE delivery_id = :id ORDER BY attempt"
        )
        return list(connection.execute(text(sql), {"id": delivery_id}).all())


def ended(status: str = "delivered", count: int = 1) -> bool:
    rows = delivery_rows()
    return len(rows) == count and all(row.status == status for row in rows)


def failing_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens there: the run fails on page 1 (an `upstream` failure)."""
    monkeypatch.setattr(settings, "SPACEX_API_URL", f"http://127.0.0.1:{free_port()}")


def test_a_failed_run_is_told_signed_and_retried_after_a_500_with_the_same_id(
    hooked: TestClient, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.script = [Step(status=500)]
    failing_upstream(monkeypatch)
    run = ingest(hooked)
    assert run["status"] == "failed"

    wait_until(ended)
    [delivery] = delivery_rows()
    assert (delivery.event_type, delivery.attempts) == ("ingest.run.failed", 2)
    assert [(a.attempt, a.response_status) for a in attempts_of(delivery.id)] == [
        (1, 500),
        (2, 200),
    ]
    assert receiver.ids() == [delivery.msg_id, delivery.msg_id]
    assert all(entry.verified for entry in receiver.received)
    event = receiver.received[1].event
    assert event["type"] == "ingest.run.failed"
    data = event["data"]
    assert (data["id"], data["status"], data["reason_kind"]) == (run["id"], "failed", "upstream")
    assert data["error"] == run["error"]
    assert data["links"] == {
        "run": f"/ingest/{run['id']}",
        "rejects": f"/ingest/{run['id']}/rejects",
        "changes": f"/ingest/{run['id']}/changes",
    }

    listed = hooked.get("/webhooks/deliveries", params={"status": "delivered"}).json()
    assert listed["total"] == 1
    item = listed["items"][0]
    assert item["url"] == f"http://127.0.0.1:{receiver.port}/***"  # path and token hidden
    assert [a["response_status"] for a in item["attempts"]] == [500, 200]
    assert item["attempts"][0]["error"] == "HTTP 500: ok"
    assert item["run_id"] == run["id"] and item["next_attempt_at"] is None
    assert hooked.get("/webhooks/deliveries", params={"status": "failed"}).json()["total"] == 0


def test_a_receiver_that_times_out_gets_the_event_again_with_the_same_id(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "WEBHOOK_TIMEOUT_SECONDS", 0.3)
    receiver.script = [Step(hang_seconds=2)]
    with TestClient(app):
        change(get_engine(), paused=True, reason="maintenance")
        wait_until(ended)
    [delivery] = delivery_rows()
    first, second = attempts_of(delivery.id)
    assert (first.response_status, first.error) == (None, "timed out: no answer within the timeout")
    assert second.response_status == 200
    assert receiver.ids() == [delivery.msg_id] * 2
    assert receiver.received[1].event["type"] == "ingest.schedule.paused"
    assert receiver.received[1].event["data"]["freshness_stale_suppressed"] is True


def test_410_gone_stops_sending_to_that_receiver_until_redelivered(
    hooked: TestClient, receiver: Receiver
) -> None:
    receiver.script = [Step(status=410)]
    change(get_engine(), paused=True, reason="first")
    wait_until(lambda: ended("gone"))
    change(get_engine(), paused=False, reason="second")
    wait_until(lambda: ended("gone", count=2))
    assert len(receiver.received) == 1  # the second event was never sent
    assert query_one("SELECT count(*) FROM webhook_gone_urls")[0] == 1

    second = delivery_rows()[1]
    response = hooked.post(f"/webhooks/deliveries/{second.id}/redeliver")
    assert response.status_code == 202, response.text
    wait_until(lambda: delivery_rows()[1].status == "delivered")
    assert receiver.ids() == [delivery_rows()[0].msg_id, second.msg_id]
    assert query_one("SELECT count(*) FROM webhook_gone_urls")[0] == 0


def test_redeliver_answers_404_and_409(
    hooked: TestClient, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert hooked.post("/webhooks/deliveries/99/redeliver").status_code == 404
    monkeypatch.setattr(settings, "WEBHOOK_RETRY_SCHEDULE_SECONDS", [3600.0])
    receiver.script = [Step(status=500)]
    change(get_engine(), paused=True, reason=None)
    wait_until(lambda: len(attempts_of(1)) == 1 and attempts_of(1)[0].response_status == 500)
    response = hooked.post(f"/webhooks/deliveries/{delivery_rows()[0].id}/redeliver")
    assert response.status_code == 409
    assert "still pending" in response.json()["detail"]


def test_retries_give_up_after_the_last_attempt_of_the_schedule(
    hooked: TestClient, receiver: Receiver
) -> None:
    receiver.script = [Step(status=503, headers={"Retry-After": "0"})] * 8
    change(get_engine(), paused=True, reason=None)
    wait_until(lambda: ended("failed"))
    [delivery] = delivery_rows()
    assert delivery.attempts == 8
    assert [a.response_status for a in attempts_of(delivery.id)] == [503] * 8
    assert len(set(receiver.ids())) == 1 and len(receiver.ids()) == 8


def test_two_workers_never_send_the_same_attempt_twice(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "WEBHOOK_CONCURRENCY", 3)
    receiver.script = [Step(status=500)] * 10  # some retries too
    for index in range(20):
        change(get_engine(), paused=index % 2 == 0, reason=f"change {index}")
    workers = [DeliveryWorker(), DeliveryWorker()]
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: ended("delivered", count=20))
    finally:
        for worker in workers:
            worker.stop()
    rows = delivery_rows()
    attempts = query_one(
        "SELECT count(*), count(DISTINCT (delivery_id, attempt)) FROM webhook_attempts"
    )
    assert attempts[0] == attempts[1] == sum(row.attempts for row in rows) == len(receiver.ids())
    assert len(receiver.ids()) == 30  # 20 events, 10 of them twice
    delivered = [entry.msg_id for entry in receiver.received if entry.answered == 200]
    assert sorted(delivered) == sorted(row.msg_id for row in rows)  # each exactly once


def test_dry_runs_send_nothing_unless_their_event_is_named(
    hooked: TestClient, receiver: Receiver, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        settings, "WEBHOOK_EVENTS", ["ingest.run.succeeded", "ingest.schedule.paused"]
    )
    assert ingest(hooked, dry_run=True)["status"] == "succeeded"
    change(get_engine(), paused=True, reason="marker")  # delivered after the dry run's turn
    wait_until(ended)
    assert [entry.event["type"] for entry in receiver.received] == ["ingest.schedule.paused"]

    monkeypatch.setattr(settings, "WEBHOOK_EVENTS", ["ingest.dry_run.finished"])
    run = ingest(hooked, dry_run=True)
    wait_until(lambda: ended(count=2))
    event = receiver.received[-1].event
    assert (event["type"], event["data"]["id"], event["data"]["dry_run"]) == (
        "ingest.dry_run.finished",
        run["id"],
        True,
    )


def test_success_and_a_new_upstream_field_are_told(
    hooked: TestClient, receiver: Receiver, upstream: FakeUpstream
) -> None:
    first = ingest(hooked)
    upstream.records = [{**record, "nickname": "x"} for record in upstream.records]
    second = ingest(hooked)
    wait_until(lambda: ended(count=3))
    told = sorted(
        ((entry.event["type"], entry.event["data"]) for entry in receiver.received),
        key=lambda event: (event[0], event[1].get("id", 0)),
    )
    assert [kind for kind, _ in told] == [
        "ingest.run.succeeded",
        "ingest.run.succeeded",
        "ingest.schema.drifted",
    ]
    assert told[0][1]["rows_inserted"] == first["rows_inserted"]
    assert told[2][1]["unknown_fields"] == ["nickname"]
    assert told[2][1]["run"]["id"] == second["id"]


def test_slack_format_sends_a_text_line(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "WEBHOOK_FORMAT", "slack")
    monkeypatch.setattr(settings, "WEBHOOK_SECRET", None)
    with TestClient(app):
        change(get_engine(), paused=True, reason="deploy")
        wait_until(ended)
    assert receiver.received[0].event == {"text": "crew-etl: the schedule was paused (deploy)"}
    assert "webhook-signature" not in receiver.received[0].headers


def test_cli_webhooks_test_sends_a_signed_ping_and_prints_the_answer(receiver: Receiver) -> None:
    result = CliRunner().invoke(cli, ["webhooks", "test"])
    assert result.exit_code == 0, result.output
    assert f"http://127.0.0.1:{receiver.port}/***: HTTP 200 in" in result.output
    [entry] = receiver.received
    assert entry.verified and entry.event["type"] == "ping"
    assert entry.msg_id.startswith("msg_")

    receiver.script = [Step(status=410)]
    failed = CliRunner().invoke(cli, ["webhooks", "test"])
    assert failed.exit_code == 1
    assert "HTTP 410" in failed.output
