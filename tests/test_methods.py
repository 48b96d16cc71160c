"""HEAD on a streamed body (an event stream that never ends): the headers come back at once and
the stream is stopped, whichever way the server reports a client that left (ASGI spec 2.3: a
disconnect on receive; 2.4: an OSError from send)."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from app.api.methods import HeadAsGet


def endless_events(stopped: list[bool]) -> Starlette:
    async def ticks() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: tick\n\n"
                await asyncio.sleep(0.01)
        finally:
            stopped.append(True)

    async def events(request: Request) -> StreamingResponse:
        return StreamingResponse(ticks(), media_type="text/event-stream")

    return Starlette(routes=[Route("/events", events)])


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
def test_head_on_an_endless_stream_answers_its_headers_and_stops_it(spec_version: str) -> None:
    stopped: list[bool] = []
    inner = HeadAsGet(endless_events(stopped))

    async def server(scope: Scope, receive: Receive, send: Send) -> None:
        asgi = {**scope.get("asgi", {}), "spec_version": spec_version}
        await inner({**scope, "asgi": asgi}, receive, send)

    with TestClient(server) as client:
        response = client.head("/events")

    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["content-type"].startswith("text/event-stream")
    assert stopped == [True]
