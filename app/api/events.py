"""`GET /ingest/{id}/events`: a run followed live, as Server-Sent Events.

Each event the run's record produced (app/ingest/events.py) goes out as it is read, numbered
by its `id:` so that a client reconnecting with `Last-Event-ID` gets only what it missed; once
the run is over, a last `event: end` carries the run's record and the stream closes. A
keep-alive comment goes out after 15 s without an event."""

from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException
from fastapi.responses import StreamingResponse
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, format_sse_event
from sqlalchemy import Connection
from sqlmodel import Session

from app.api.deps import in_read_thread
from app.api.ingest import RunId
from app.api.responses import RETRY_AFTER, RETRY_AFTER_SECONDS, Problem, not_found
from app.config import settings
from app.ingest.events import EventHub, FollowedRun, StreamsExhausted
from app.models import IngestRun, IngestRunPublic

router = APIRouter(prefix="/ingest", tags=["ingest"])

hub = EventHub(settings.EVENTS_MAX_STREAMS)
RECONNECT_MILLISECONDS = 2000  # the `retry:` a client waits before reconnecting
# never stored, and never held back by a buffering proxy (nginx reads X-Accel-Buffering)
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE_SECONDS = 15  # proxies close connections idle for longer (nginx: 60 s)

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
    **not_found("ingest run"),
    503: {
        "model": Problem,
        "description": "EVENTS_MAX_STREAMS streams are open here, or the database is "
        "unavailable (then with its `cause`): retry after `Retry-After` seconds",
        "headers": {"Retry-After": RETRY_AFTER},
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
    # not EventSourceResponse: FastAPI would run the function as its own event generator
    response_class=StreamingResponse,
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
) -> EventSourceResponse:
    """The run's events from the first (or after `Last-Event-ID`), as they happen, then `end`
    with the run's record; a finished run's stream replays them and closes at once. Works on
    any replica, whichever one executes the run."""
    return EventSourceResponse(run_events(followed, last_event_id or 0), headers=STREAM_HEADERS)


async def run_events(followed: FollowedRun, sent: int) -> AsyncIterator[bytes]:
    """The stream's bytes, a keep-alive comment after KEEPALIVE_SECONDS without an event. A
    plain body (not FastAPI's generator endpoint, whose producer task can outrun a client that
    leaves): Starlette cancels it when the client goes, and HEAD stops it after the headers."""
    retry: int | None = RECONNECT_MILLISECONDS
    while True:
        changed = followed.changed
        for event in followed.after(sent):
            yield format_sse_event(
                data_str=event.data, event=event.kind, id=str(event.seq), retry=retry
            )
            sent, retry = event.seq, None
        if followed.done_after(sent):
            break
        if hub.closing:  # the process is stopping: the client resumes elsewhere
            return
        with anyio.move_on_after(KEEPALIVE_SECONDS) as idle:
            await changed.wait()
        if idle.cancelled_caught:
            yield KEEPALIVE_COMMENT
    run = await in_read_thread(read_run, followed.run_id)
    record = run.model_dump_json() if run is not None else "null"
    yield format_sse_event(data_str=record, event="end", retry=retry)
