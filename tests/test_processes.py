"""Real server processes on one database: SIGKILL, SIGTERM, racing replicas and migrations."""

import gc
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.db import database_url, migration_heads
from app.main import app
from tests.conftest import crew_checksum, query_one, run_row, wait_until
from tests.fake_upstream import FakeUpstream, free_port, synthetic_crew

PROJECT = Path(__file__).resolve().parent.parent
UVICORN = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
CREW_ETL_SERVE = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]


class Server:
    """The app in its own process, as an operator would start it."""

    def __init__(self, command: list[str], upstream_url: str, **extra_env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "SPACEX_API_URL": upstream_url,
            "INGEST_PAGE_SIZE": "2",
            "LOG_FORMAT": "json",
            **extra_env,
        }
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            cwd=PROJECT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # a start takes seconds, but half a minute on a 2-core machine loaded by parallel tests
            wait_until(self.ready, timeout=90)
        except BaseException:  # never leave a server running behind a failed start
            self.stop()
            raise

    def ready(self) -> bool:
        assert self.process.poll() is None, "server exited during start-up"
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def post(self, path: str) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture(name="servers")
def servers_fixture(upstream: FakeUpstream) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(command: list[str] = UVICORN, **extra_env: str) -> Server:
        started.append(Server(command, upstream.url, **extra_env))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def load_snapshot(server: Server) -> str:
    run_id = server.post("/ingest").json()["id"]
    wait_until(lambda: run_row(run_id).status == "succeeded")
    return crew_checksum()


def start_slow_run(server: Server, upstream: FakeUpstream) -> int:
    """A run that changes every row, slowed down so it is caught half-way through its load
    (50 pages of 2, one a second: still loading while another server starts)."""
    upstream.records = [{**r, "status": "retired"} for r in upstream.records]
    upstream.records += [synthetic_crew(index) for index in range(82)]
    upstream.page_delay_seconds = 1.0
    response = server.post("/ingest")
    assert response.status_code == 202
    run_id = int(response.json()["id"])
    wait_until(lambda: run_row(run_id).pages_fetched >= 2)
    return run_id


def test_sigkill_mid_load_keeps_the_snapshot_and_the_orphan_is_ended_when_stale(
    servers: Callable[..., Server], upstream: FakeUpstream
) -> None:
    # a stale window of 4 s (10 s elsewhere): heartbeats every 0.67 s keep the live run alive
    stale = {"INGEST_STALE_AFTER_SECONDS": "4"}
    first = servers(**stale)
    before = load_snapshot(first)
    run_id = start_slow_run(first, upstream)

    replica = servers(**stale)  # a replica starting meanwhile must leave the live run alone
    assert run_row(run_id).status == "running"
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)

    assert crew_checksum() == before
    assert run_row(run_id).status == "running"  # nobody has noticed yet
    restarted = servers(**stale)
    wait_until(lambda: run_row(run_id).status != "running", timeout=60)  # once it is stale
    status, error, _ = run_row(run_id)
    assert status == "failed" and error.startswith("abandoned: no heartbeat since"), error
    upstream.page_delay_seconds = 0
    assert load_snapshot(restarted) != before
    assert replica.ready()


@pytest.mark.parametrize("command", [UVICORN, CREW_ETL_SERVE], ids=["uvicorn", "crew-etl-serve"])
def test_sigterm_rolls_back_and_records_the_interruption(
    servers: Callable[..., Server], upstream: FakeUpstream, command: list[str]
) -> None:
    server = servers(command)
    before = load_snapshot(server)
    run_id = start_slow_run(server, upstream)

    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=30)

    status, error, _ = run_row(run_id)
    assert (status, error) == ("failed", "interrupted: received SIGTERM")
    assert crew_checksum() == before


def test_twenty_concurrent_triggers_on_two_replicas_start_exactly_one_run(
    servers: Callable[..., Server], upstream: FakeUpstream
) -> None:
    replicas = [servers(), servers()]
    upstream.page_delay_seconds = 0.2

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda i: replicas[i % 2].post("/ingest"), range(20)))

    codes = sorted(response.status_code for response in responses)
    assert codes == [202] + [409] * 19
    run_id = next(r.json()["id"] for r in responses if r.status_code == 202)
    assert {r.json()["active_run_id"] for r in responses if r.status_code == 409} == {run_id}
    wait_until(lambda: run_row(run_id).status == "succeeded")
    assert query_one("SELECT count(*) FROM ingest_runs")[0] == 1


@pytest.fixture(name="fresh_database_url")
def fresh_database_url_fixture() -> Iterator[str]:
    admin = create_engine(database_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("DROP DATABASE IF EXISTS crew_etl_migration_race"))
        connection.execute(text("CREATE DATABASE crew_etl_migration_race"))
    yield (
        make_url(database_url())
        .set(database="crew_etl_migration_race")
        .render_as_string(hide_password=False)
    )
    with admin.connect() as connection:
        connection.execute(text("DROP DATABASE crew_etl_migration_race WITH (FORCE)"))
    admin.dispose()


def test_replicas_migrating_at_once_do_not_collide(fresh_database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": fresh_database_url}
    command = [sys.executable, "-m", "app.cli", "migrate"]
    processes = [
        subprocess.Popen(
            command, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(4)
    ]

    outputs = [process.communicate(timeout=60)[0].decode() for process in processes]

    assert [process.returncode for process in processes] == [0] * 4, outputs
    engine = create_engine(fresh_database_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).all() == [
            (head,) for head in migration_heads()
        ]
    engine.dispose()


def test_start_up_objects_stay_out_of_full_collections_while_the_app_runs() -> None:
    gc.unfreeze()  # as in a served process, where nothing is frozen before start-up
    try:
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200
            frozen = gc.get_freeze_count()
            assert frozen > 50_000  # at least what start-up built: modules, routes
            assert not any(tracked is app for tracked in gc.get_objects(generation=2))
            with TestClient(app):  # a second app in the same process leaves them frozen
                pass
            assert gc.get_freeze_count() > frozen // 2  # not thawed (some were freed since)

        assert gc.get_freeze_count() == 0
    finally:
        gc.freeze()  # as the suite keeps it (tests/conftest.py)
