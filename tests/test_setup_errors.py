"""Expected failures are one line (make adds its own `Error` line): the setting, the cause, the
fix, the secret masked; configuration errors exit 2, without a traceback."""

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url

from app.db import database_url
from tests.conftest import wait_until
from tests.fake_upstream import free_port
from tests.pg_harness import OwnPostgres
from tests.test_logs import empty_database_fixture  # noqa: F401  (the fixture)

PROJECT = Path(__file__).resolve().parent.parent
CREW_ETL = [sys.executable, "-m", "app.cli"]
SECRET = "s3cret-pw"


def run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "LOG_FORMAT": "console", **env}
    environment.pop("LOG_LEVEL", None)
    return subprocess.run(
        command, cwd=PROJECT, env=environment, capture_output=True, text=True, timeout=120
    )


def lines_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    return (result.stdout + result.stderr).strip().splitlines()


def make(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run(["make", "--no-print-directory", *args], **env)


def with_password(url: str) -> str:
    return make_url(url).set(password=SECRET).render_as_string(hide_password=False)


def test_invalid_settings_are_all_named_in_one_line_and_exit_2() -> None:
    bad = {"INGEST_PAGE_SIZE": "abc", "HTTP_RETRIES": "-1", "LOG_FORMAT": "text"}
    for command in (
        [*CREW_ETL, "runs"],
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(free_port())],
    ):
        result = run(command, **bad)

        assert result.returncode == 2, result.stderr
        assert lines_of(result) == [
            "invalid settings: INGEST_PAGE_SIZE='abc': input should be a valid integer, unable "
            "to parse string as an integer; HTTP_RETRIES='-1': input should be greater than or "
            "equal to 0; LOG_FORMAT='text': input should be 'json' or 'console' (fix them in the "
            "environment or .env)"
        ]


def test_a_database_url_that_does_not_parse_is_an_invalid_setting_with_its_secret_masked() -> None:
    result = run([*CREW_ETL, "runs"], DATABASE_URL=f"postgresql://crew:{SECRET}@host:abc/crew")

    assert result.returncode == 2, result.stderr
    assert lines_of(result) == [
        "invalid settings: DATABASE_URL=***: value error, not a database URL (invalid literal "
        "for int() with base 10: 'abc') (fix them in the environment or .env)"
    ]


def refused_url() -> str:
    return f"postgresql://crew:{SECRET}@127.0.0.1:{free_port()}/crew"


def missing_database_url() -> str:
    return with_password(str(make_url(database_url()).set(database="no_such_database")))


def unknown_user_url() -> str:
    return with_password(str(make_url(database_url()).set(username="no_such_user")))


@pytest.mark.parametrize(
    ("url", "cause", "fix"),
    [
        (refused_url, "connection refused", "start PostgreSQL, or fix the host and port"),
        (
            lambda: f"postgresql://crew:{SECRET}@no-such-host.invalid/crew",
            "unknown host",
            "fix the host in DATABASE_URL",
        ),
        (missing_database_url, "the database does not exist", "create it (createdb)"),
        (unknown_user_url, "authentication failed: no such user", "fix the user in DATABASE_URL"),
    ],
    ids=["refused", "unknown-host", "no-database", "no-user"],
)
@pytest.mark.parametrize(
    "command", [["runs"], ["migrate"], ["ingest"], ["psql", "-c", "SELECT 1"]], ids=str
)
def test_a_database_that_is_away_is_one_line_naming_the_setting(
    url: object, cause: str, fix: str, command: list[str]
) -> None:
    result = run([*CREW_ETL, *command], DATABASE_URL=url())  # type: ignore[operator]

    assert result.returncode == 1, result.stderr
    [line] = lines_of(result)
    assert line.startswith(f"database unavailable ({cause}) at DATABASE_URL=postgresql://")
    assert fix in line and ":***@" in line and SECRET not in line


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_runs_adds_only_its_own_error_line() -> None:
    result = make("runs", DATABASE_URL=refused_url())

    assert result.returncode == 2  # make's code for a failed recipe
    first, make_line = lines_of(result)
    assert first.startswith("database unavailable (connection refused) at DATABASE_URL=")
    # make[1] when run under another make (`make test`)
    assert re.match(r"make(\[\d+\])?: \*\*\* \[Makefile:\d+: runs\] Error 1$", make_line)


@pytest.fixture(name="taken_port")
def taken_port_fixture() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_serve_on_a_port_in_use_says_which_port_to_use_before_migrating(taken_port: int) -> None:
    # the database is away too: the port is checked first, so that is not what is reported
    command = [*CREW_ETL, "serve", "--host", "127.0.0.1", "--port", str(taken_port)]
    result = run(command, DATABASE_URL=refused_url())

    assert result.returncode == 2
    assert lines_of(result) == [
        f"port {taken_port} is in use on 127.0.0.1; make run PORT={taken_port + 1} "
        f"(crew-etl serve --port {taken_port + 1})"
    ]


@pytest.mark.parametrize("port_given", ["option", "UVICORN_PORT"])
def test_uvicorn_on_a_port_in_use_says_which_port_to_use_before_migrating(
    taken_port: int, port_given: str
) -> None:
    # uvicorn imports the app before it binds: the import refuses, before start-up migrates
    # (the database is away too, and that is not what is reported)
    command = [sys.executable, "-m", "uvicorn", "app.main:app"]
    environment = {"DATABASE_URL": refused_url()}
    if port_given == "option":
        command += ["--port", str(taken_port)]
    else:
        environment["UVICORN_PORT"] = str(taken_port)
    result = run(command, **environment)

    assert result.returncode == 2
    assert lines_of(result) == [
        f"port {taken_port} is in use on 127.0.0.1; uvicorn app.main:app --port {taken_port + 1}"
    ]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_and_make_demo_on_a_port_in_use(taken_port: int) -> None:
    for target in ("run", "demo"):
        result = make(target, f"PORT={taken_port}", DATABASE_URL=refused_url())

        assert result.returncode == 2, result.stderr
        first, make_line = lines_of(result)
        assert first.startswith(f"port {taken_port} is in use on 127.0.0.1; make {target} ")
        assert f"PORT={taken_port + 1}" in first and "Error 2" in make_line


def test_an_unknown_upstream_host_is_one_line_and_exit_1() -> None:
    upstream = "http://no-such-host.invalid"
    result = run(
        [*CREW_ETL, "ingest"],
        DATABASE_URL=database_url(),
        SPACEX_API_URL=upstream,
        MIGRATE_ON_START="false",
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [logged] = result.stderr.strip().splitlines()  # the summary goes to stdout
    assert "run failed" in logged and "page 1: unknown host, not retried" in logged
    assert "SPACEX_API_URL" in logged and f"url={upstream}/v4/crew/query" in logged
    [summary] = result.stdout.strip().splitlines()
    assert summary.startswith("Ingest run 1: failed: page 1: unknown host, not retried")


def test_an_unexpected_error_keeps_its_traceback(empty_database: str) -> None:
    # a database without migrations: not one that is away, so not translated
    result = run([*CREW_ETL, "runs"], DATABASE_URL=empty_database)

    assert result.returncode == 1
    assert "Traceback" in result.stderr and 'relation "ingest_runs" does not exist' in result.stderr


def test_serve_starts_without_its_database_and_migrates_once_it_answers(tmp_path: Path) -> None:
    own = OwnPostgres()
    own.stop()
    port = free_port()
    log = tmp_path / "serve.log"
    command = [*CREW_ETL, "serve", "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "DATABASE_URL": own.url(), "LOG_FORMAT": "console"}
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=output, stderr=output)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{base}/healthz") == 200)
        wait_until(lambda: log.read_text().count("waiting for the database") == 1)
        readiness = httpx.get(f"{base}/readyz", timeout=5)
        assert readiness.status_code == 503
        assert (
            "database unavailable (connection refused) at DATABASE_URL=postgresql://"
            "postgres@127.0.0.1:" in " ".join(readiness.json()["problems"])
        )

        own.start()
        wait_until(lambda: answers(f"{base}/readyz") == 200, timeout=60)
        assert httpx.get(f"{base}/crew", timeout=5).status_code == 200  # migrated
    finally:
        server.terminate()
        server.wait(timeout=30)
        own.destroy()
    text = log.read_text()
    assert text.count("waiting for the database") == 1  # once per cause, not once per try
    assert text.count("the database answers: migrated and recovered") == 1
    assert "Traceback" not in text


def answers(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return 0
