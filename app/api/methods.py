"""Methods: HEAD on every GET route, and the `Allow` header of a 405.

HEAD (RFC 9110 §9.3.2) answers the GET's status and headers, without its body.

FastAPI registers its routes for GET only, and Starlette's router answers HEAD on them with 405;
this ASGI middleware hands the router a GET instead and drops the body on the way out. A body
that streams (an event stream) is not waited for: once the headers are out, the route is told
the client went away, as a server tells it (a disconnect to receive, an OSError from send). No
database, no routes here."""

from collections.abc import Iterable

from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> list[str]:
    """The methods some route answers at the scope's path, HEAD wherever GET is. Each method is
    tried against the routes as the router would: included routers keep their routes' methods
    to themselves."""
    routes = list(routes)
    allowed = {
        method
        for method in METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in routes)
    }
    if "GET" in allowed:
        allowed.add("HEAD")
    return [method for method in METHODS if method in allowed]


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        headers_sent = False

        async def receive_or_leave() -> Message:
            if headers_sent:
                return {"type": "http.disconnect"}
            return await receive()

        async def headers_only(message: Message) -> None:
            nonlocal headers_sent
            if headers_sent:  # more of a streamed body: gone, as to a client that left
                raise OSError("HEAD: the body is not sent")
            if message["type"] == "http.response.body":
                headers_sent = True
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        try:
            await self.app({**scope, "method": "GET"}, receive_or_leave, headers_only)
        except (OSError, ClientDisconnect):
            if not headers_sent:
                raise
