"""`GET /ingest/{id}/events`: a run followed live, as Server-Sent Events.

Each event the run's record produced (app/ingest/events.py) goes out as it is read, numbered
by its `id:` so that a client reconnecting with `Last-Event-ID` gets only what it missed; once
the run is over, a last `event: end` carries the run's record and the stream closes. FastAPI's
EventSourceResponse adds a keep-alive comment after 15 s without an event."""

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import Connection
from sqlmodel import Session

from app.api.deps import in_read_thread
from app.api.ingest import Problem, RunId
from app.config import settings
from app.ingest.events import EventHub, FollowedRun, StreamsExhausted
from app.models import IngestRun, IngestRunPublic

router = APIRouter(prefix="/ingest", tags=["ingest"])

hub = EventHub(settings.EVENTS_MAX_STREAMS)
RETRY_AFTER_SECONDS = 5
RECONNECT_MILLISECONDS = 2000  # the `retry:` a client waits before reconnecting

EVENT_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `queued`, `started`, `page` (counts so far), "
        "`cancelled` or `ended` (with rows written), each with `id:` and a JSON object in "
        "`data:`; then `end` with the run's record, and the stream closes",
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "example": 'event: page\ndata: {"run_id": 1, "status": "running", '
                '"pages_fetched": 3, "records_fetched": 300, "records_valid": 299, '
                '"records_rejected": 1, "at": "2026-11-20T08:00:03.000000Z"}\nid: 5\n\n',
            }
        },
    },
    404: {"model": Problem, "description": "No run with this id"},
    503: {
        "model": Problem,
        "description": "EVENTS_MAX_STREAMS streams are open here: retry after `Retry-After`",
    },
}


def read_run(connection: Connection, run_id: int) -> IngestRunPublic | None:
    run = Session(connection).get(IngestRun, run_id)
    return None if run is None else IngestRunPublic.model_validate(run)


async def open_stream(run_id: RunId) -> AsyncIterator[FollowedRun]:
    """A stream's place among EVENTS_MAX_STREAMS (503 beyond), held until it closes, however
    it closes (the client gone included)."""
    try:
        followed = hub.follow(run_id)
    except StreamsExhausted as full:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        raise HTTPException(status_code=503, detail=str(full), headers=headers) from None
    try:
        if await in_read_thread(read_run, run_id) is None:
            raise HTTPException(status_code=404, detail=f"ingest run {run_id} not found")
        yield followed
    finally:
        hub.unfollow(followed)


@router.get(
    "/{run_id}/events",
    summary="Follow a run live (Server-Sent Events)",
    operation_id="stream_ingest_events",
    response_class=EventSourceResponse,
    responses=EVENT_STREAM_DOC,
)
async def stream_ingest_events(
    followed: Annotated[FollowedRun, Depends(open_stream)],
    last_event_id: Annotated[
        int | None,
        Header(
            alias="Last-Event-ID",
            ge=0,
            le=2_147_483_647,
            description="The last event id received: the stream resumes after it",
        ),
    ] = None,
) -> AsyncIterator[ServerSentEvent]:
    """The run's events from the first (or after `Last-Event-ID`), as they happen, then `end`
    with the run's record; a finished run's stream replays them and closes at once. Works on
    any replica, whichever one executes the run."""
    sent = last_event_id or 0
    retry: int | None = RECONNECT_MILLISECONDS
    while True:
        changed = followed.changed
        for event in followed.after(sent):
            id_ = str(event.seq)
            yield ServerSentEvent(raw_data=event.data, event=event.kind, id=id_, retry=retry)
            sent, retry = event.seq, None
        if followed.done_after(sent):
            break
        if hub.closing:  # the process is stopping: the client resumes elsewhere
            return
        await changed.wait()
    run = await in_read_thread(read_run, followed.run_id)
    record = run.model_dump_json() if run is not None else "null"
    yield ServerSentEvent(raw_data=record, event="end", retry=retry)
