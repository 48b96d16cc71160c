"""`GET /ingest/{id}/events`: a run followed live over Server-Sent Events, from the database, on
any replica; resumed with Last-Event-ID; bounded by EVENTS_MAX_STREAMS."""

import json
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session
from typer.testing import CliRunner

from app.api import events
from app.cli import cli
from app.db import get_engine
from app.ingest import service
from app.ingest.events import FollowedRun
from app.models import RunTrigger
from tests.conftest import ingest, query_one, wait_until
from tests.fake_upstream import FakeUpstream, synthetic_crew
from tests.test_processes import Server, servers_fixture  # noqa: F401

Event = dict[str, Any]
runner = CliRunner()


def parse(lines: Iterable[str]) -> Iterator[Event]:
    """Events as a browser's EventSource dispatches them (comments skipped)."""
    event: Event = {}
    for line in lines:
        if not line:
            if "data" in event:
                yield {"event": "message", **event, "data": json.loads(event["data"])}
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            if name != "retry":  # the reconnection delay, not part of an event
                event[name] = value


def kinds(stream: list[Event]) -> list[str]:
    return [event["event"] for event in stream]


def read_all(client: TestClient | httpx.Client, path: str, **headers: str) -> list[Event]:
    with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(parse(response.iter_lines()))


def test_a_finished_run_replays_its_events_then_its_record_and_closes(
    client: TestClient, upstream: FakeUpstream
) -> None:
    run = ingest(client)  # 18 records in pages of 5

    stream = read_all(client, f"/ingest/{run['id']}/events")

    assert kinds(stream) == ["queued", "started", "page", "page", "page", "page", "ended", "end"]
    assert [event.get("id") for event in stream] == ["1", "2", "3", "4", "5", "6", "7", None]
    pages = [event["data"] for event in stream if event["event"] == "page"]
    assert [(p["pages_fetched"], p["records_fetched"]) for p in pages] == [
        (1, 5),
        (2, 10),
        (3, 15),
        (4, 18),
    ]
    assert pages[-1]["records_valid"] == 18 and pages[-1]["records_rejected"] == 0
    ended = stream[-2]["data"]
    assert (ended["status"], ended["rows_inserted"], ended["error"]) == ("succeeded", 18, None)
    assert stream[-1]["data"] == client.get(f"/ingest/{run['id']}").json()
    assert query_one("SELECT count(*) FROM ingest_run_events")[0] == 7


def test_last_event_id_resumes_after_it(client: TestClient, upstream: FakeUpstream) -> None:
    run = ingest(client)
    whole = read_all(client, f"/ingest/{run['id']}/events")

    resumed = read_all(client, f"/ingest/{run['id']}/events", **{"Last-Event-ID": "4"})

    assert resumed == whole[4:]
    last = whole[-2]["id"]
    assert kinds(read_all(client, f"/ingest/{run['id']}/events", **{"Last-Event-ID": last})) == [
        "end"
    ]


def test_a_cancelled_queued_run_streams_queued_cancelled_and_end(client: TestClient) -> None:
    with Session(get_engine()) as session:
        run = service.create_run(session, RunTrigger.api)
        service.cancel_run(session, run.id or 0)

    stream = read_all(client, f"/ingest/{run.id}/events")

    assert kinds(stream) == ["queued", "cancelled", "end"]
    assert stream[1]["data"]["status"] == stream[2]["data"]["status"] == "cancelled"


def test_unknown_runs_and_bad_event_ids_are_refused(
    client: TestClient, upstream: FakeUpstream
) -> None:
    missing = client.get("/ingest/99/events")
    assert (missing.status_code, missing.json()) == (404, {"detail": "ingest run 99 not found"})
    run = ingest(client)
    for bad in ("x", "-1", "1.5"):
        response = client.get(f"/ingest/{run['id']}/events", headers={"Last-Event-ID": bad})
        assert response.status_code == 422
    assert events.hub.streams == 0  # refused streams give their place back


def test_beyond_the_stream_limit_503_with_retry_after(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events.hub, "max_streams", 0)

    response = client.get("/ingest/1/events")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"


def slow_run(upstream: FakeUpstream, pages: int, delay: float) -> None:
    """Pages of 2 (the servers' INGEST_PAGE_SIZE), each served `delay` seconds late."""
    upstream.records += [synthetic_crew(index) for index in range(pages * 2 - 18)]
    upstream.page_delay_seconds = delay


def test_a_client_on_one_replica_follows_a_run_executed_by_another_and_resumes(
    servers: Callable[..., Server], upstream: FakeUpstream
) -> None:
    runner, follower = servers(), servers()
    slow_run(upstream, pages=16, delay=0.2)
    run_id = runner.post("/ingest").json()["id"]
    path = f"{follower.url}/ingest/{run_id}/events"

    with httpx.Client(timeout=30) as http:
        with http.stream("GET", path) as response:
            first: list[Event] = []
            for event in parse(response.iter_lines()):
                first.append(event)
                if event["event"] == "page" and event["data"]["pages_fetched"] == 3:
                    break  # the client goes away mid-run
        rest = read_all(http, path, **{"Last-Event-ID": first[-1]["id"]})

    stream = first + rest
    ids = [int(event["id"]) for event in stream if "id" in event]
    assert ids == list(range(1, len(ids) + 1))  # no gap, no duplicate
    assert kinds(stream) == ["queued", "started", *["page"] * 16, "ended", "end"]
    pages = [event["data"]["pages_fetched"] for event in stream if event["event"] == "page"]
    assert pages == list(range(1, 17))
    assert stream[-1]["data"]["status"] == "succeeded"
    assert stream[-1]["data"]["rows_inserted"] == 32


def test_the_stream_limit_and_a_disconnected_client_freeing_its_place(
    servers: Callable[..., Server], upstream: FakeUpstream
) -> None:
    server = servers(EVENTS_MAX_STREAMS="2")
    slow_run(upstream, pages=30, delay=0.5)
    run_id = server.post("/ingest").json()["id"]
    path = f"{server.url}/ingest/{run_id}/events"

    def opens() -> int:
        with httpx.stream("GET", path, timeout=10) as response:
            return response.status_code

    with httpx.Client(timeout=30) as first, httpx.Client(timeout=30) as second:
        streams = [first.stream("GET", path), second.stream("GET", path)]
        responses = [stream.__enter__() for stream in streams]
        assert [response.status_code for response in responses] == [200, 200]
        refused = httpx.get(path, timeout=10)
        assert (refused.status_code, refused.headers["retry-after"]) == (503, "5")
        streams[0].__exit__(None, None, None)  # the client goes away mid-stream
        wait_until(lambda: opens() == 200, timeout=10)
        assert opens() == 200
        assert next(parse(responses[1].iter_lines()))["event"] == "queued"
        streams[1].__exit__(None, None, None)
    server.post(f"/ingest/{run_id}/cancel")


def test_cli_follows_the_newest_run_and_exits_with_its_outcome(
    servers: Callable[..., Server], upstream: FakeUpstream
) -> None:
    server = servers()
    slow_run(upstream, pages=10, delay=0.1)
    run_id = server.post("/ingest").json()["id"]

    followed = runner.invoke(cli, ["runs", "--follow", "--url", server.url])

    assert followed.exit_code == 0, followed.output
    assert f"Ingest run {run_id}: succeeded" in followed.output
    assert query_one("SELECT status FROM ingest_runs WHERE id = :id", id=run_id)[0] == "succeeded"
    with Session(get_engine()) as session:
        cancelled = service.create_run(session, RunTrigger.api)
        service.cancel_run(session, cancelled.id or 0)
    result = runner.invoke(cli, ["runs", "--follow", str(cancelled.id), "--url", server.url])
    assert result.exit_code == 3, result.output
    assert "cancelled on request" in result.output
    missing = runner.invoke(cli, ["runs", "--follow", "99", "--url", server.url])
    assert missing.exit_code == 4 and "no run 99" in missing.output


def test_the_status_page_follows_only_a_run_in_progress(client: TestClient, tmp_path: Path) -> None:
    with Session(get_engine()) as session:
        queued = service.create_run(session, RunTrigger.api)
        page = client.get("/", headers={"Accept": "text/html"}).text
        service.cancel_run(session, queued.id or 0)

    script = re.search(r"<script>(.*?)</script>", page, re.S)
    assert script is not None and f'new EventSource("/ingest/{queued.id}/events")' in page
    assert "<script src" not in page  # nothing loaded from elsewhere
    if shutil.which("node"):  # the inline script at least parses
        (tmp_path / "follow.js").write_text(script.group(1))
        subprocess.run(["node", "--check", str(tmp_path / "follow.js")], check=True)
    finished = client.get("/", headers={"Accept": "text/html"}).text
    assert "EventSource" not in finished and "cancelled" in finished


def test_sigterm_ends_the_streams_and_the_server_stops(
    servers: Callable[..., Server], upstream: FakeUpstream
) -> None:
    runner, follower = servers(), servers()
    slow_run(upstream, pages=200, delay=0.5)  # goes on on the runner meanwhile
    run_id = runner.post("/ingest").json()["id"]

    with httpx.stream("GET", f"{follower.url}/ingest/{run_id}/events", timeout=60) as response:
        stream = parse(response.iter_lines())
        assert next(stream)["event"] == "queued"
        follower.process.send_signal(signal.SIGTERM)
        rest = list(stream)  # ends when the follower stops, not when the run does

    assert follower.process.wait(timeout=30) == -signal.SIGTERM  # uvicorn re-raises it
    assert "end" not in kinds(rest)  # cut short: the client resumes on another replica
    assert query_one("SELECT status FROM ingest_runs WHERE id = :id", id=run_id)[0] == "running"
    assert runner.post(f"/ingest/{run_id}/cancel").status_code == 202


def test_an_idle_stream_sends_a_keep_alive_comment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "KEEPALIVE_SECONDS", 0.05)

    async def first_two() -> list[bytes]:
        stream = events.run_events(FollowedRun(run_id=1), 0)  # nothing read yet: idle
        try:
            return [await anext(stream), await anext(stream)]
        finally:
            await stream.aclose()

    assert anyio.run(first_two) == [b": ping\n\n", b": ping\n\n"]
