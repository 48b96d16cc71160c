"""Tests run against a real PostgreSQL: TEST_DATABASE_URL when set, else a fresh embedded one.

The environment is set before `app` is imported, because settings are read once at import.
"""

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def _test_database_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    from app.embedded_postgres import start_embedded_postgres

    data_dir = Path(tempfile.mkdtemp(prefix="crew-etl-test-pg-"))
    return start_embedded_postgres(data_dir, cleanup_mode="delete")


os.environ.update(
    DATABASE_URL=_test_database_url(),
    SPACEX_API_URL="https://api.spacexdata.test",
    HTTP_TIMEOUT_SECONDS="2",
    HTTP_RETRIES="2",
    HTTP_BACKOFF_INITIAL_SECONDS="0.01",
    HTTP_BACKOFF_MAX_SECONDS="1",
    INGEST_INTERVAL_SECONDS="0",
    INGEST_STALE_AFTER_SECONDS="10",
    LOG_FORMAT="json",
)
os.environ.pop("INGEST_API_TOKEN", None)

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlmodel import Session  # noqa: E402

from app.config import settings  # noqa: E402
from app.db import get_engine, migrate  # noqa: E402
from app.main import app  # noqa: E402
from tests.contract import check_every_response  # noqa: E402
from tests.fake_upstream import FakeUpstream  # noqa: E402


def load_fixture(name: str = "crew_v4.json") -> list[dict[str, Any]]:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="session", autouse=True)
def schema() -> None:
    migrate()


@pytest.fixture(autouse=True)
def clean_tables() -> Iterator[None]:
    with get_engine().begin() as connection:
        connection.execute(
            text(
                "TRUNCATE crew, crew_versions, crew_name_trigrams, ingest_runs, ingest_rejects "
                "RESTART IDENTITY CASCADE"
            )
        )
    yield


@pytest.fixture(name="session")
def session_fixture() -> Iterator[Session]:
    with Session(get_engine()) as session:
        yield session


@pytest.fixture(name="client")
def client_fixture() -> Iterator[TestClient]:
    """The app's test client; every response it receives is checked against the OpenAPI
    document (tests/contract.py)."""
    with TestClient(app) as client:
        check_every_response(client, app)
        yield client


@pytest.fixture(name="crew_records")
def crew_records_fixture() -> list[dict[str, Any]]:
    return load_fixture()


@pytest.fixture(name="upstream")
def upstream_fixture(
    crew_records: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeUpstream]:
    """The real snapshot served over HTTP on 127.0.0.1, in pages of 5."""
    server = FakeUpstream(crew_records).start()
    monkeypatch.setattr(settings, "SPACEX_API_URL", server.url)
    monkeypatch.setattr(settings, "INGEST_PAGE_SIZE", 5)
    yield server
    server.stop()


def crew_checksum() -> str:
    """md5 over every crew row and column, to prove a table is untouched."""
    query = text("SELECT md5(coalesce(string_agg(c::text, '|' ORDER BY id), '')) FROM crew c")
    with get_engine().connect() as connection:
        return str(connection.execute(query).scalar_one())


def query_one(sql: str, **params: Any) -> Any:
    with get_engine().connect() as connection:
        return connection.execute(text(sql), params).one()


def run_row(run_id: int) -> Any:
    return query_one(
        "SELECT status, error, pages_fetched FROM ingest_runs WHERE id = :id", id=run_id
    )


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def ingest(client: TestClient, **params: Any) -> dict[str, Any]:
    """POST /ingest and return the finished run; TestClient runs the background task first."""
    response = client.post("/ingest", params=params)
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    assert response.headers["location"] == f"/ingest/{run_id}"
    return dict(client.get(f"/ingest/{run_id}").json())
