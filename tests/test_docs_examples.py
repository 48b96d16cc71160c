"""The documentation's curl examples, run as written against a fresh `make demo`, each comment's
claim checked; an example without a check here fails, so none goes unchecked."""

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.embedded_postgres import running_server_pid
from tests.conftest import wait_until
from tests.fake_upstream import free_port

PROJECT = Path(__file__).resolve().parent.parent
PAGES = [PROJECT / "README.md", PROJECT / "docs" / "getting-started.md"]
STOP_SIGNALS = {"README.md": signal.SIGTERM, "getting-started.md": signal.SIGINT}
pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@dataclass
class Answer:
    status: int
    headers: str
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


def examples(page: Path) -> list[str]:
    """The lines of the page's `sh` blocks that call the demo (and the variables they set);
    the compose blocks call a stack of their own."""
    blocks = re.findall(r"```sh\n(.*?)```", page.read_text(), re.S)
    blocks = [block for block in blocks if "docker compose" not in block]
    lines = [line for block in blocks for line in block.splitlines()]
    return [line for line in lines if "localhost:8000" in line]


def names(answer: Answer) -> list[str]:
    return [item["name"] for item in answer.json()["items"]]


def run_2_succeeded(answer: Answer) -> bool:
    run = answer.json()
    return (run["id"], run["status"], run["rows_unchanged"]) == (2, "succeeded", 18)


# A distinctive part of each example -> its comment's claim
CLAIMS: dict[str, Callable[[Answer], bool]] = {
    "curl -X POST localhost:8000/ingest ": lambda a: (
        a.status == 202 and "location: /ingest/2" in a.headers.lower() and a.json()["id"] == 2
    ),
    "curl localhost:8000/ingest/2 ": run_2_succeeded,
    "curl 'localhost:8000/crew?agency=NASA' ": lambda a: (
        a.json()["total"] == 10 and {i["agency"] for i in a.json()["items"]} == {"NASA"}
    ),
    "name=hurl&sort=-updated_at": lambda a: names(a) == ["Douglas Hurley"],
    "curl -i 'localhost:8000/crew?limit=5'": lambda a: bool(
        re.search(r"link: </crew\?limit=5&cursor=[\w-]+>; rel=\"next\"", a.headers, re.I)
    ),
    "launch=5eb87d46ffd86e000604b388": lambda a: (
        sorted(names(a)) == ["Douglas Hurley", "Robert Behnken"]
    ),
    "curl localhost:8000/crew/5ebf1a6e23a9a60006e03a7a ": lambda a: (
        a.json()["name"] == "Robert Behnken"
    ),
    "ingest/1/rejects": lambda a: a.status == 200 and a.json()["total"] == 0,
    "ingest/1/changes?op=insert": lambda a: (
        a.json()["total"] == 18 and {c["op"] for c in a.json()["items"]} == {"insert"}
    ),
    "5ebf1a6e23a9a60006e03a7a/history": lambda a: a.json()["total"] == 1,
    "agency=NASA&as_of=": lambda a: a.json()["total"] == 10,
    "ingest?dry_run=true": lambda a: a.status == 202 and a.json()["dry_run"] is True,
    "If-None-Match: $etag": lambda a: a.status == 304 and a.body == "",
    "Accept: application/json": lambda a: (
        a.json()["freshness"]["state"] == "fresh" and a.json()["last_run"]["run"]["id"] == 2
    ),
}


def command_of(line: str) -> str:
    """The example without its comment (which may name a URL too)."""
    return re.split(r"\s+# ", line, maxsplit=1)[0] + " "


def claim_for(line: str) -> Callable[[Answer], bool]:
    found = [check for part, check in CLAIMS.items() if part in command_of(line)]
    assert len(found) == 1, f"no single check for the documented example: {line}"
    return found[0]


@pytest.fixture(name="demo")
def demo_fixture(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[int]:
    """`make demo` as a user runs it (python -m demo is its recipe), on a free port; stopped by
    Ctrl-C (SIGINT) or by `kill` (SIGTERM), its embedded PostgreSQL with it either way."""
    port, data = free_port(), tmp_path / "pg"
    command = [sys.executable, "-m", "demo", "--port", str(port), "--data", str(data)]
    # started with SIGINT ignored, as a shell's background job starts it: Ctrl-C must still stop it
    process = subprocess.Popen(
        command,
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    printed: list[str] = []
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: printed.extend(stdout), daemon=True).start()
    try:
        wait_until(lambda: any("Ctrl-C stops" in line for line in printed), timeout=180)
        yield port
    finally:
        stop_with = STOP_SIGNALS[request.node.callspec.id]
        process.send_signal(stop_with)
        try:
            assert process.wait(timeout=60) in (0, 128 + stop_with)
        finally:
            if process.poll() is None:  # never leave it running behind a failure
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
            stdout.close()
        assert running_server_pid(data) is None


def run_example(line: str, port: int, assignments: list[str], workdir: Path) -> Answer:
    headers = workdir / "headers"
    headers.write_text("")
    # as written, plus: quiet, and the response head kept aside for the claims about it
    shown = line.replace("localhost:8000", f"localhost:{port}")
    shown = re.sub(r"^curl ", f"curl -s -D {headers} ", shown)
    result = subprocess.run(
        ["bash", "-c", "\n".join([*assignments, shown])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    head = headers.read_text()
    status = int(head.split()[1]) if head else 0
    body = result.stdout
    if "-i" in line.split():  # the head is in the output too
        body = body.split("\n\n", 1)[-1]  # text mode reads CRLF as LF
    return Answer(status, head, body)


def loaded_in_an_earlier_second(port: int) -> bool:
    """Whether the whole second now is past the end of the newest run (`date` has seconds)."""
    newest = httpx.get(f"http://127.0.0.1:{port}/ingest?limit=1").json()["items"][0]
    finished = datetime.fromisoformat(newest["finished_at"].replace("Z", "+00:00"))
    return datetime.now(UTC).replace(microsecond=0) > finished


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_curl_example_does_what_its_comment_says(
    page: Path, demo: int, tmp_path: Path
) -> None:
    lines = examples(page)
    assert lines, f"no examples found in {page}"
    assignments: list[str] = []
    for line in lines:
        if re.match(r"^\w+=", line):  # sets a variable for the examples after it
            assignments.append(line.replace("localhost:8000", f"localhost:{demo}"))
            continue
        check = claim_for(line)
        if (
            "$(date" in line
        ):  # a reader types it seconds after the demo loaded, not within its second
            wait_until(lambda: loaded_in_an_earlier_second(demo))
        if command_of(line).endswith("/ingest/2 "):  # the run POSTed before may still load

            def done(check: Callable[[Answer], bool] = check, line: str = line) -> bool:
                return check(run_example(line, demo, assignments, tmp_path))

            wait_until(done)
        answer = run_example(line, demo, assignments, tmp_path)
        assert check(answer), f"{line}\n{answer.status}\n{answer.headers}\n{answer.body[:500]}"
