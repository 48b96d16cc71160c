"""Logs as the README promises: JSON from the first line, one line per expected failure, access
lines with fields, tracebacks only for the unexpected and without local variables."""

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from sqlalchemy import create_engine, make_url
from sqlalchemy.pool import NullPool

from app.db import database_url
from app.logs import configure_logging
from tests.conftest import wait_until
from tests.fake_upstream import free_port

PROJECT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url(), "LOG_LEVEL": "INFO", **extra}


def json_lines(output: str) -> list[dict[str, Any]]:
    """Every non-empty line parsed as JSON (fails on the first that is not)."""
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def serve_once(command: list[str], port: int) -> str:
    """Start a server, ask for /crew once, stop it with SIGTERM; return all it printed."""
    process = subprocess.Popen(
        command,
        cwd=PROJECT,
        env=environment(LOG_FORMAT="json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def ready() -> bool:
        assert process.poll() is None, "server exited during start-up"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout=180)  # a loaded machine starts slowly
        assert httpx.get(f"http://127.0.0.1:{port}/crew?limit=1", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    return output


@pytest.mark.parametrize(
    "command",
    [
        [PYTHON, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port"],
        [PYTHON, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port"],
    ],
    ids=["uvicorn", "crew-etl-serve"],
)
def test_json_server_start_is_json_from_the_first_line_with_access_lines(
    command: list[str],
) -> None:
    port = free_port()
    lines = json_lines(serve_once([*command, str(port)], port))

    events = [line["event"] for line in lines]
    assert any(event.startswith("Started server process") for event in events)
    assert any(event.startswith("Uvicorn running on") for event in events)
    starting = next(line for line in lines if line["event"] == "starting")
    assert starting["data"] and starting["docs"] == "/docs"
    access = [line for line in lines if line["logger"] == "crew_etl.access"]
    crew = next(line for line in access if line["path"] == "/crew")
    assert crew["method"] == "GET" and crew["status"] == 200
    assert crew["duration_ms"] >= 0 and crew["client"].startswith("127.0.0.1:")
    assert not any(line["logger"] == "uvicorn.access" for line in lines)


@pytest.mark.parametrize(
    "command",
    [[PYTHON, "-m", "app.cli", "migrate"], [PYTHON, "-m", "alembic", "upgrade", "head"]],
    ids=["crew-etl-migrate", "alembic"],
)
def test_json_migrate_prints_only_json(command: list[str], empty_database: str) -> None:
    env = environment(LOG_FORMAT="json", DATABASE_URL=empty_database)
    result = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout + result.stderr)
    migration = [line["event"] for line in lines if line["logger"] == "alembic.runtime.migration"]
    assert migration[0].startswith("Running upgrade  -> 0001")
    # alembic's preamble (dialect, DDL mode) is for LOG_LEVEL=DEBUG
    assert not any(event.startswith(("Context impl", "Will assume")) for event in migration)


@pytest.fixture(name="empty_database")
def empty_database_fixture() -> Iterator[str]:
    """A database of its own on the test server, without tables: every migration runs."""
    name = f"crew_etl_empty_{os.getpid()}"
    admin = create_engine(database_url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield make_url(database_url()).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_failed_ingest_is_a_few_lines_naming_page_url_and_setting() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = subprocess.run(
        [PYTHON, "-m", "app.cli", "ingest"],
        cwd=PROJECT,
        env=environment(LOG_FORMAT="console", SPACEX_API_URL=url, MIGRATE_ON_START="false"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    assert len(output.splitlines()) <= 6, output  # started, 2 retries, failed, the summary
    failed = next(line for line in result.stderr.splitlines() if "run failed" in line)
    assert "page 1: ConnectError after 3 attempts" in failed
    assert f"url={url}/v4/crew/query" in failed
    assert "SPACEX_API_URL" in failed
    assert "Ingest run 1: failed: page 1: ConnectError" in result.stdout


@pytest.fixture(name="console_logs")
def console_logs_fixture() -> Any:
    yield configure_logging
    configure_logging("INFO", "json")  # as conftest's environment has it


def explode() -> None:
    local_secret = "s3cr3t" + "-in-a-local"  # noqa: F841  (only locals show it joined)
    raise RuntimeError("unexpected")


@pytest.mark.parametrize(("level", "locals_shown"), [("INFO", False), ("DEBUG", True)])
def test_tracebacks_show_local_variables_only_at_debug(
    console_logs: Any, capsys: pytest.CaptureFixture[str], level: str, locals_shown: bool
) -> None:
    console_logs(level, "console")
    try:
        explode()
    except RuntimeError:
        structlog.get_logger("test").exception("run failed")
    err = capsys.readouterr().err
    assert "RuntimeError" in err and "explode" in err
    assert ("s3cr3t-in-a-local" in err) is locals_shown
