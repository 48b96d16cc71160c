"""`crew-etl runs --follow [ID]`: a run followed through a service's `GET /ingest/{id}/events`,
the stream any client gets, with a progress bar; a dropped connection resumes after the last
event received (Last-Event-ID). No database here: the service may run anywhere."""

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import httpx
import stamina
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from app.models import IngestRunPublic

# How `runs --follow` exits: by the run's outcome, or why it could not follow one.
EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 3}
CANNOT_FOLLOW = 4
RECONNECT_TIMEOUT_SECONDS = 60  # a service restarting mid-run is waited for this long


class CannotFollow(Exception):
    """No such run, or no service answering at the URL."""


@dataclass
class Event:
    kind: str = "message"
    data: list[str] = field(default_factory=list)
    id: str | None = None


def parse(lines: Iterable[str]) -> Iterator[Event]:
    """Server-Sent Events from a stream's lines, as an EventSource dispatches them."""
    event = Event()
    for line in lines:
        if not line:
            if event.data:
                yield event
            event = Event()
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event.kind = value
        elif name == "data":
            event.data.append(value)
        elif name == "id":
            event.id = value


def follow_and_summarise(
    base_url: str, run_id: int | None, summarise: Callable[[IngestRunPublic], None]
) -> int:
    """`runs --follow`: the run's progress on stderr, then `summarise(run)`; the exit code."""
    try:
        run = follow_run(base_url, run_id, Console(stderr=True))
    except (CannotFollow, httpx.HTTPError) as exc:
        Console(stderr=True).print(Text(f"cannot follow: {exc}", style="red"))
        return CANNOT_FOLLOW
    summarise(run)
    return EXIT_CODES.get(run.status, 1)


def newest_run_id(http: httpx.Client) -> int:
    response = http.get("/ingest", params={"limit": 1})
    response.raise_for_status()
    items = response.json()["items"]
    if not items:
        raise CannotFollow("no run to follow yet")
    return int(items[0]["id"])


def follow_run(base_url: str, run_id: int | None, console: Console) -> IngestRunPublic:
    """Show the run's progress until it ends; return its record as the service sent it."""
    timeout = httpx.Timeout(10, read=60)  # a keep-alive comes at least every 15 s
    with httpx.Client(base_url=base_url, timeout=timeout) as http:
        try:
            run_id = run_id or newest_run_id(http)
        except httpx.HTTPError as exc:
            raise CannotFollow(f"{base_url}: {exc}") from None
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(f"run {run_id}: waiting", total=None)
            last_id: str | None = None

            def reconnect(exc: Exception) -> bool:  # once following: no service is an error
                return isinstance(exc, httpx.TransportError) and last_id is not None

            retrying = stamina.retry_context(
                on=reconnect, attempts=None, timeout=RECONNECT_TIMEOUT_SECONDS
            )
            for attempt in retrying:
                with attempt:
                    for event in events(http, run_id, last_id):
                        last_id = event.id or last_id
                        data = json.loads("\n".join(event.data))
                        if event.kind == "end":
                            return IngestRunPublic.model_validate(data)
                        progress.update(task, description=describe(run_id, event.kind, data))
    raise CannotFollow(f"the stream of run {run_id} closed without its end")


def events(http: httpx.Client, run_id: int, last_id: str | None) -> Iterator[Event]:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    with http.stream("GET", f"/ingest/{run_id}/events", headers=headers) as response:
        if response.status_code == 404:
            raise CannotFollow(f"no run {run_id}")
        if response.status_code == 503:  # streams full, or the database away: try again
            raise httpx.RemoteProtocolError(f"{response.status_code} from the service")
        response.raise_for_status()
        yield from parse(response.iter_lines())


def describe(run_id: int, kind: str, data: dict[str, object]) -> str:
    if kind in ("queued", "started"):
        return f"run {run_id}: {data['status']}"
    return (
        f"run {run_id}: page {data['pages_fetched']}, {data['records_fetched']} records "
        f"({data['records_valid']} valid, {data['records_rejected']} rejected)"
    )
