"""Tests run against a real PostgreSQL: TEST_DATABASE_URL when set, else a fresh embedded one.

In parallel (`make test` runs pytest-xdist workers), the first process migrates a template
database once and each worker gets a database of its own, copied from it (CREATE DATABASE ...
TEMPLATE: a file copy, no migrations per worker). The environment is set before `app` is
imported, because settings are read once at import.
"""

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from sqlalchemy import make_url

FIXTURES = Path(__file__).parent / "fixtures"
PROJECT = Path(__file__).resolve().parent.parent
# Set by the first process for the workers it starts: the server, and this run's name prefix.
SERVER_VARIABLE, RUN_VARIABLE = "CREW_ETL_TEST_SERVER_URL", "CREW_ETL_TEST_RUN"


def _server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get(SERVER_VARIABLE)
    if url:
        return url
    from app.embedded_postgres import start_embedded_postgres

    data_dir = Path(tempfile.mkdtemp(prefix="crew-etl-test-pg-"))
    url = start_embedded_postgres(data_dir, cleanup_mode="delete")
    # A throw-away server: nothing on it must survive a crash of the machine, so no commit
    # waits for the disk and DROP DATABASE's checkpoint has little to write (37 s, seen at a
    # load average of 8, with fsync on). synchronous_commit stays on, as in production: off,
    # VACUUM could not mark the pages of the newest commits all-visible, and the plans tests
    # pin would differ. TEST_DATABASE_URL's server is left as it is.
    _on_server(
        url,
        "ALTER SYSTEM SET fsync = off",
        "ALTER SYSTEM SET full_page_writes = off",
        "SELECT pg_reload_conf()",
    )
    os.environ[SERVER_VARIABLE] = url  # the workers use this server, started once
    return url


def _on_server(url: str, *statements: str) -> list[Any]:
    """Statements in autocommit on the server's maintenance database (CREATE/DROP DATABASE);
    the rows of the last one that returns any."""
    parsed = make_url(url).set(drivername="postgresql", database="postgres")
    connection = psycopg2.connect(parsed.render_as_string(hide_password=False))
    connection.autocommit = True
    rows: list[Any] = []
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
                rows = cursor.fetchall() if cursor.description else rows
    finally:
        connection.close()
    return rows


def _database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _template_name() -> str:
    return f"crew_etl_{os.environ[RUN_VARIABLE]}_template"


def _worker_database_url(server: str, worker: str | None) -> str:
    """A worker's own copy of the migrated template; without workers, the server's database."""
    if worker is None:
        return server
    name = f"crew_etl_{os.environ[RUN_VARIABLE]}_{worker}"
    _on_server(
        server,
        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
        f'CREATE DATABASE "{name}" TEMPLATE "{_template_name()}"',
    )
    return _database(server, name)


_SERVER = _server_url()
os.environ.setdefault(RUN_VARIABLE, str(os.getpid()))
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: two workers per core. The suite waits on the processes and servers it starts
    (and on the database) more than it computes: with one worker per core a 2-core machine
    stayed half idle."""
    return 2 * (os.cpu_count() or 1)


def pytest_sessionstart(session: pytest.Session) -> None:
    """With workers coming (xdist starts them after this hook): the template, migrated once."""
    if _WORKER is not None or not session.config.pluginmanager.hasplugin("dsession"):
        return
    template = _template_name()
    _on_server(_SERVER, f'DROP DATABASE IF EXISTS "{template}"', f'CREATE DATABASE "{template}"')
    environment = {**os.environ, "DATABASE_URL": _database(_SERVER, template)}
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=PROJECT,
        env=environment,
        check=True,
        capture_output=True,
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The workers' databases and the template go with the run (the controller ends last)."""
    if _WORKER is not None or not session.config.pluginmanager.hasplugin("dsession"):
        return
    prefix = f"crew_etl_{os.environ[RUN_VARIABLE]}_"
    query = f"SELECT datname FROM pg_database WHERE starts_with(datname, '{prefix}')"
    names = [row[0] for row in _on_server(_SERVER, query)]
    _on_server(_SERVER, *(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names))


os.environ.update(
    DATABASE_URL=_worker_database_url(_SERVER, _WORKER),
    SPACEX_API_URL="https://api.spacexdata.test",
    HTTP_TIMEOUT_SECONDS="2",
    HTTP_RETRIES="2",
    HTTP_BACKOFF_INITIAL_SECONDS="0.01",
    HTTP_BACKOFF_MAX_SECONDS="1",
    INGEST_INTERVAL_SECONDS="0",
    INGEST_STALE_AFTER_SECONDS="10",
    LOG_FORMAT="json",
)
for inherited in ("INGEST_API_TOKEN", "WORKERS"):  # the caller's service settings, not ours
    os.environ.pop(inherited, None)

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlmodel import Session  # noqa: E402

from app.config import settings  # noqa: E402
from app.db import get_engine, migrate  # noqa: E402
from app.logs import configure_logging  # noqa: E402
from app.main import app  # noqa: E402
from tests.contract import check_every_response  # noqa: E402
from tests.fake_upstream import FakeUpstream  # noqa: E402


def load_fixture(name: str = "crew_v4.json") -> list[dict[str, Any]]:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="session", autouse=True)
def schema() -> None:
    migrate()
    # What the imports built stays out of full collections for the whole session, as the app's
    # start-up does in a served process (app/main.py): each TestClient start would otherwise
    # collect and freeze it all again, about 0.1 s of CPU for every test that uses one.
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def clean_tables() -> Iterator[None]:
    with get_engine().begin() as connection:
        connection.execute(
            text(
                "TRUNCATE crew, crew_versions, crew_name_trigrams, ingest_runs, ingest_rejects, "
                "webhook_outbox, webhook_deliveries, webhook_attempts, webhook_gone_urls "
                "RESTART IDENTITY CASCADE"
            )
        )
        connection.execute(text("UPDATE schedule_state SET paused = false, reason = NULL"))
        connection.execute(text("UPDATE webhook_freshness SET stale_announced_at = NULL"))
    yield
    # A command run in this process (typer's CliRunner) configures logging for itself, quiet
    # unless asked: the worker's later tests would lose their INFO lines.
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)


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
