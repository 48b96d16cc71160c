"""No form of a database password is ever printed: a URL's userinfo, its `?password=`, or
libpq's PGPASSWORD; not in the start-up line, not in an error, not in a traceback."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
import structlog
from sqlalchemy import make_url

from app.db import database_url
from app.logs import configure_logging
from app.redaction import redacted_url, secrets_in
from tests.fake_upstream import free_port
from tests.pg_harness import wait_for
from tests.test_processes import PROJECT


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:S3CRET@db/crew", "postgresql://u:***@db/crew"),
        ("postgresql://u@db/crew?password=S3CRET", "postgresql://u@db/crew?password=***"),
        (
            "postgresql://u@db/crew?sslmode=require&PassWord=S3CRET&sslpassword=K3Y",
            "postgresql://u@db/crew?PassWord=***&sslmode=require&sslpassword=***",
        ),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_every_form_of_password_is_known_as_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "FROM-ENV")
    urls = ["postgresql://u:USERINFO@db/crew", None, "postgresql://u@r/crew?password=QUERY"]
    assert secrets_in(urls) == {"FROM-ENV", "USERINFO", "QUERY"}


def test_a_secret_inside_an_error_is_masked_in_the_log_line(
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json", secrets={"S3CRET"})
    try:
        try:
            raise ValueError("could not connect to postgresql://u:S3CRET@db/crew")
        except ValueError:
            structlog.get_logger("crew_etl").exception("failed", url="x?password=S3CRET")
    finally:
        configure_logging("INFO", "json")
    (line,) = [json.loads(text) for text in capfd.readouterr().err.splitlines() if text]
    assert line["url"] == "x?password=***"
    assert "postgresql://u:***@db/crew" in line["exception"]
    assert "S3CRET" not in json.dumps(line)


def test_a_served_process_never_prints_a_password_in_any_form() -> None:
    """The test database trusts every connection, so the passwords are carried but unused."""
    parsed = make_url(database_url()).set(password="USERINFO-S3CRET")
    url = parsed.update_query_dict({"password": "QUERY-S3CRET"}).render_as_string(False)
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "PGPASSWORD": "ENV-S3CRET", "LOG_FORMAT": "json"}
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            cwd=PROJECT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200,
                timeout=180,
            )
            httpx.get(f"http://127.0.0.1:{port}/crew?limit=1")
        finally:
            process.terminate()
            process.wait(timeout=30)
            output.seek(0)
            printed = output.read()
    lines = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    # every line says which replica (host) and which worker (pid) wrote it
    assert lines and all({"host", "pid"} <= set(line) for line in lines)
    assert {line["pid"] for line in lines if line["event"] == "starting"} == {process.pid}
    starting = [line for line in lines if line["event"] == "starting"]
    assert [line["data"] for line in starting] == [redacted_url(url)]
    assert "password=***" in redacted_url(url) and ":***@" in redacted_url(url)
    assert "S3CRET" not in printed


def test_a_failing_command_prints_no_password() -> None:
    url = f"postgresql://u:USERINFO-S3CRET@127.0.0.1:{free_port()}/db?password=QUERY-S3CRET"
    env = {**os.environ, "DATABASE_URL": url, "PGPASSWORD": "ENV-S3CRET"}
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        cwd=Path(PROJECT),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "connection refused" in (result.stdout + result.stderr).lower()
    assert "S3CRET" not in result.stdout + result.stderr
