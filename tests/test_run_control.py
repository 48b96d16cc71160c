"""Cancelling runs, and the bearer token that guards every write endpoint."""

import threading

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.config import settings
from app.ingest import service
from app.models import RunTrigger
from tests.conftest import crew_checksum, query_one, run_row, wait_until
from tests.fake_upstream import FakeUpstream


def test_cancel_a_queued_run(client: TestClient, session: Session) -> None:
    run = service.create_run(session, RunTrigger.api)

    response = client.post(f"/ingest/{run.id}/cancel")

    assert response.status_code == 202
    assert (response.json()["status"], response.json()["error"]) == (
        "cancelled",
        "cancelled on request",
    )
    assert run.id is not None and service.execute_run(run.id) is None  # never starts
    assert client.post("/ingest").status_code == 202  # the guard is free again


def test_cancel_a_running_run_rolls_it_back(
    client: TestClient, session: Session, upstream: FakeUpstream
) -> None:
    client.post("/ingest")
    before = crew_checksum()
    upstream.records = [{**r, "status": "retired"} for r in upstream.records]
    upstream.page_delay_seconds = 0.3
    run = service.create_run(session, RunTrigger.api)
    assert run.id is not None
    worker = threading.Thread(target=service.execute_run, args=(run.id,))
    worker.start()
    wait_until(lambda: run_row(run.id).pages_fetched >= 1)

    response = client.post(f"/ingest/{run.id}/cancel")
    worker.join(timeout=20)

    assert response.status_code == 202
    assert run_row(run.id)[:2] == ("cancelled", "cancelled on request")
    assert crew_checksum() == before
    assert client.post(f"/ingest/{run.id}/cancel").status_code == 409


def test_cancel_a_finished_or_unknown_run(client: TestClient, upstream: FakeUpstream) -> None:
    run_id = client.post("/ingest").json()["id"]

    finished = client.post(f"/ingest/{run_id}/cancel")

    assert finished.status_code == 409
    assert finished.json() == {"detail": f"run {run_id} already finished with status succeeded"}
    assert client.post("/ingest/999/cancel").status_code == 404


@pytest.fixture(name="token")
def token_fixture(monkeypatch: pytest.MonkeyPatch) -> str:
    token = "s3cret-token-value"
    monkeypatch.setattr(settings, "INGEST_API_TOKEN", token)
    return token


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic czNjcmV0", "Bearer "])
def test_write_endpoints_need_the_token(client: TestClient, token: str, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}

    for path in ("/ingest", "/ingest/1/cancel"):
        response = client.post(path, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert token not in response.text
    assert query_one("SELECT count(*) FROM ingest_runs")[0] == 0


def test_the_right_token_is_accepted_and_reads_stay_public(
    client: TestClient, upstream: FakeUpstream, token: str, capfd: pytest.CaptureFixture[str]
) -> None:
    response = client.post("/ingest", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 202
    assert client.get("/crew").status_code == 200
    assert client.get(f"/ingest/{response.json()['id']}").status_code == 200
    assert token not in "".join(capfd.readouterr())


def test_open_ingest_is_warned_about_at_start(capfd: pytest.CaptureFixture[str]) -> None:
    from app.main import app

    with TestClient(app):
        pass

    assert "INGEST_API_TOKEN is not set" in capfd.readouterr().err
