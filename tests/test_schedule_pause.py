"""Pausing the schedule: one row in the database every replica reads, announced to webhooks,
shown by /readyz (as a state, not a failure); and the freshness announcements it holds back."""

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app import scheduler
from app.cli import cli
from app.config import settings
from app.db import get_engine
from app.main import app
from app.notify import freshness
from tests.conftest import ingest, query_one
from tests.fake_upstream import FakeUpstream

runner = CliRunner()


def outbox_kinds() -> list[str]:
    with get_engine().connect() as connection:
        rows = connection.exec_driver_sql("SELECT kind FROM webhook_outbox ORDER BY id").all()
    return [row.kind for row in rows]


@pytest.fixture(name="quiet")
def quiet_fixture() -> TestClient:
    """The app without its lifespan: no delivery worker looks at freshness behind the test's
    back."""
    return TestClient(app)


def check_freshness(stale_after_seconds: float) -> str | None:
    with get_engine().begin() as connection:
        return freshness.check(connection, stale_after_seconds)


def test_pause_and_resume_through_the_api(client: TestClient) -> None:
    assert client.get("/schedule").json()["paused"] is False
    response = client.post("/schedule/pause", params={"reason": "upstream maintenance"})
    assert response.status_code == 200
    body = response.json()
    assert (body["paused"], body["reason"]) == (True, "upstream maintenance")
    assert body["changed_at"] is not None and body["interval_seconds"] == 0

    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert (ready.json()["status"], ready.json()["schedule"]) == ("ok", "paused")

    again = client.post("/schedule/pause", params={"reason": "twice"}).json()
    assert again["reason"] == "upstream maintenance"  # nothing changed, nothing announced
    assert client.post("/schedule/resume").json()["paused"] is False
    assert client.get("/readyz").json()["schedule"] == "running"
    assert outbox_kinds() == ["ingest.schedule.paused", "ingest.schedule.resumed"]


def test_a_paused_schedule_holds_scheduled_runs_only(
    client: TestClient, upstream: FakeUpstream
) -> None:
    client.post("/schedule/pause")
    assert scheduler.trigger_scheduled_run(slot=123) is None
    assert query_one("SELECT count(*) FROM ingest_runs")[0] == 0
    assert ingest(client)["status"] == "succeeded"  # manual runs still work

    client.post("/schedule/resume")
    run_id = scheduler.trigger_scheduled_run(slot=124)
    assert run_id is not None
    assert query_one("SELECT trigger FROM ingest_runs WHERE id = :id", id=run_id)[0] == "schedule"


def test_pause_and_resume_need_the_token(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "INGEST_API_TOKEN", "t0ken")
    assert client.post("/schedule/pause").status_code == 401
    assert client.post("/schedule/resume").status_code == 401
    assert client.post("/webhooks/deliveries/1/redeliver").status_code == 401
    headers = {"Authorization": "Bearer t0ken"}
    assert client.post("/schedule/pause", headers=headers).json()["paused"] is True
    assert client.get("/schedule").json()["paused"] is True  # reads stay open


def test_cli_pauses_resumes_and_shows() -> None:
    result = runner.invoke(cli, ["schedule", "pause", "--reason", "deploy"])
    assert result.exit_code == 0, result.output
    assert "schedule: paused since" in result.output and "(deploy)" in result.output
    assert "schedule: paused" in runner.invoke(cli, ["schedule", "status"]).output
    assert "already paused" in runner.invoke(cli, ["schedule", "pause"]).output
    assert "schedule: running" in runner.invoke(cli, ["schedule", "resume"]).output
    assert outbox_kinds() == ["ingest.schedule.paused", "ingest.schedule.resumed"]


def test_stale_is_announced_once_per_period_and_recovery_once(
    quiet: TestClient, upstream: FakeUpstream
) -> None:
    assert check_freshness(3600) is None  # no run yet: nothing to be stale about
    ingest(quiet)
    assert check_freshness(3600) is None
    assert check_freshness(0.001) == "ingest.freshness.stale"
    assert check_freshness(0.001) is None  # the same stale period
    ingest(quiet)
    assert check_freshness(3600) == "ingest.freshness.recovered"
    assert check_freshness(3600) is None
    kinds = [kind for kind in outbox_kinds() if kind.startswith("ingest.freshness")]
    assert kinds == ["ingest.freshness.stale", "ingest.freshness.recovered"]


def test_no_stale_announcement_while_paused(quiet: TestClient, upstream: FakeUpstream) -> None:
    ingest(quiet)
    quiet.post("/schedule/pause")
    assert check_freshness(0.001) is None
    quiet.post("/schedule/resume")
    assert check_freshness(0.001) == "ingest.freshness.stale"


def test_dry_runs_do_not_count_as_fresh(quiet: TestClient, upstream: FakeUpstream) -> None:
    ingest(quiet, dry_run=True)
    assert check_freshness(0.001) == "ingest.freshness.stale"  # a dry run loaded nothing


def test_the_status_page_shows_the_pause_and_the_last_deliveries(client: TestClient) -> None:
    client.post("/schedule/pause", params={"reason": "upstream maintenance"})
    with get_engine().begin() as connection:  # one delivery that failed, as the worker records
        connection.exec_driver_sql(
            "INSERT INTO webhook_deliveries (outbox_id, msg_id, event_type, payload, url_key, "
            "url_redacted, status, attempts, last_status, last_error) SELECT id, 'msg_1', kind, "
            "'{}', 'k', 'https://hooks.example/***', 'failed', 8, 500, 'HTTP 500: down' "
            "FROM webhook_outbox"
        )
    summary = client.get("/", headers={"Accept": "application/json"}).json()
    assert summary["schedule"]["paused"] is True
    assert summary["schedule"]["reason"] == "upstream maintenance"
    webhooks = summary["webhooks"]
    assert (webhooks["receivers"], webhooks["pending"], webhooks["failed"]) == (0, 0, 1)
    assert webhooks["last"][0]["event_type"] == "ingest.schedule.paused"
    assert webhooks["last"][0]["last_error"] == "HTTP 500: down"

    page = client.get("/").text
    assert 'id="schedule-paused"' in page and "upstream maintenance" in page
    assert "0 pending, 1 failed, 0 gone" in page and "HTTP 500: down" in page
