"""`crew-etl` commands: exit codes, summaries and run listing, through the same service code."""

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import make_url
from typer.testing import CliRunner

from app import cli as cli_module
from app import db
from app.cli import cli
from app.db import database_url
from tests.conftest import query_one
from tests.fake_upstream import FakeUpstream, Fault

runner = CliRunner()
PROJECT = Path(__file__).resolve().parent.parent


def test_ingest_prints_a_summary_and_exits_zero(upstream: FakeUpstream) -> None:
    result = runner.invoke(cli, ["ingest"])

    assert result.exit_code == 0, result.output
    assert "Ingest run 1: succeeded" in result.output
    assert "rows_inserted" in result.output and "18" in result.output
    assert query_one("SELECT status, trigger FROM ingest_runs WHERE id = 1") == ("succeeded", "cli")


def test_failed_ingest_exits_one_with_the_error(upstream: FakeUpstream) -> None:
    upstream.fail(1, Fault("status", status=403))

    result = runner.invoke(cli, ["ingest"])

    assert result.exit_code == 1
    assert "failed" in result.output and "HTTP 403 Forbidden" in result.output


def test_runs_lists_recent_runs(upstream: FakeUpstream) -> None:
    runner.invoke(cli, ["ingest"])
    upstream.fail(1, Fault("status", status=403))
    runner.invoke(cli, ["ingest"])

    result = runner.invoke(cli, ["runs", "--limit", "5"], env={"COLUMNS": "80"})

    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].split() == ["id", "status", "trigger", "started", "(UTC)", "ins/upd/del/rej"]
    assert lines[1].split()[:3] == ["2", "failed", "cli"]
    assert lines[1].split()[-1] == "0/0/0/0"
    assert lines[2].strip().startswith("page 1: HTTP 403 Forbidden")  # the error, whole
    assert lines[3].split()[:3] == ["1", "succeeded", "cli"]
    assert lines[3].split()[-1] == "18/0/0/0"


def test_psql_gets_the_password_by_environment_not_on_its_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any user on the machine can read a process's command line (`ps`)."""
    url = make_url(database_url()).set(password="s3cret-Pa55")
    monkeypatch.setattr(db, "database_url", lambda: url.render_as_string(hide_password=False))
    calls: list[tuple[list[str], dict[str, str]]] = []
    real_call = subprocess.call

    def call(arguments: list[str], env: dict[str, str]) -> int:
        calls.append((arguments, env))
        return real_call(arguments, env=env, stdout=subprocess.DEVNULL)

    monkeypatch.setattr(cli_module.subprocess, "call", call)
    result = runner.invoke(cli, ["psql", "--command", "SELECT 1"])

    assert result.exit_code == 0, result.output  # trust auth here: the password is not checked
    ((arguments, env),) = calls
    assert not any("s3cret" in argument for argument in arguments)
    assert env["PGPASSWORD"] == "s3cret-Pa55"


def test_every_command_has_help() -> None:
    for command in ("serve", "ingest", "migrate", "runs", "psql", "reset"):
        result = runner.invoke(cli, [command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def run_in_terminal(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run `command` attached to a pseudo-terminal, as an operator at a shell would."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        command, cwd=PROJECT, env=env, stdin=terminal, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    output = bytearray()
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    return process.wait(timeout=60), output.decode(errors="replace")


def test_ingest_on_a_terminal_shows_progress_then_the_summary(upstream: FakeUpstream) -> None:
    upstream.page_delay_seconds = 0.3
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "SPACEX_API_URL": upstream.url,
        "INGEST_PAGE_SIZE": "5",
        "LOG_FORMAT": "console",
        "LOG_LEVEL": "INFO",  # a command's INFO lines show only when asked for
        "COLUMNS": "120",
    }

    code, output = run_in_terminal([sys.executable, "-m", "app.cli", "ingest"], env)

    assert code == 0, output
    assert re.search(r"run 1: [1-4] pages, \d+ records, 0 rejected", output)
    assert "Ingest run 1: succeeded" in output
    # log lines print above the live progress line, none cleared by it: each whole, in order
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    assert re.search(r"run started .*source_url=.*run finished .*Ingest run 1", plain, re.S)


def test_markup_from_the_upstream_is_printed_as_plain_text(upstream: FakeUpstream) -> None:
    content_type = "text/[/]html[link=http://evil.test]x[bold]"
    upstream.fail(1, Fault("body", body=b"<p/>", headers={"content-type": content_type}))

    ingest = runner.invoke(cli, ["ingest"])
    listing = runner.invoke(cli, ["runs"])

    assert ingest.exit_code == 1 and listing.exit_code == 0, listing.output
    for output in (ingest.output, listing.output):
        assert f"'{content_type}'" in re.sub(r"[\s│]", "", output)


def test_dry_run_prints_the_changes_and_writes_no_crew(upstream: FakeUpstream) -> None:
    upstream.records = upstream.records[:3]

    result = runner.invoke(cli, ["ingest", "--dry-run"])

    assert result.exit_code == 0, result.output
    assert "Dry run 1 would change 3 members: 3 insert" in result.output
    assert all(record["id"] in result.output for record in upstream.records)
    assert query_one("SELECT dry_run, rows_inserted FROM ingest_runs WHERE id = 1") == (True, 3)
    assert query_one("SELECT count(*) FROM crew")[0] == 0
