"""A local stand-in for the SpaceX API with switchable faults, for tests and the benchmark.

Serves `GET /v4/crew` (the whole array) and `POST /v4/crew/query` (mongoose-paginate envelope)
from a list of records or from N synthetic records made on the fly. Faults are queued per page:
each request for that page consumes the next fault, then the page is served normally.

Run standalone: `python -m tests.fake_upstream --records 200000 --port 8099`, or
`--fixture tests/fixtures/crew_v4.json` to serve a recording. `PUT /_fake` with
`{"records": [...], "page_delay_seconds": 5}` changes what a running stand-in serves (the
container smoke test uses it to make a slow run of changed records).
"""

import argparse
import asyncio
import functools
import gzip
import io
import json
import math
import socket
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

# Synthetic records: each agency, each status, the names containing "han" (Shannon, Hannah) and
# COMMON_LAUNCH each match a quarter of the records, independently of one another; every other
# launch id is shared by about 0.2% of them.
AGENCIES = ("NASA", "SpaceX", "ESA", "JAXA")
STATUSES = ("active", "inactive", "retired", "unknown")
FIRST_NAMES = ("Anna", "Robert", "Joanne", "Victor", "Shannon", "Hannah", "Matthias", "Koichi")
COMMON_LAUNCH = f"{0xC0FFEE:024x}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def synthetic_crew(index: int, version: int = 0) -> dict[str, Any]:
    """Deterministic crew record number `index`; a different `version` changes its name."""
    suffix = f" v{version}" if version else ""
    launches = [f"{index % 997:024x}", f"{(index * 7) % 991 + 1000:024x}"]
    return {
        "name": f"{FIRST_NAMES[index // 16 % 8]} Crewmember {index}{suffix}",
        "agency": AGENCIES[index % 4],
        "image": f"https://i.imgur.com/{index:08d}.png",
        "wikipedia": f"https://en.wikipedia.org/wiki/Crewmember_{index}",
        "launches": launches + [COMMON_LAUNCH] if index // 128 % 4 == 0 else launches,
        "status": STATUSES[index // 4 % 4],
        "id": f"{index:024x}",
    }


@dataclass
class Fault:
    """One misbehaviour for one request. `kind` is one of the names in FakeUpstream.FAULTS."""

    kind: str
    status: int = 500
    seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    size: int = 0
    body: bytes = b""


@functools.cache
def gzip_bomb(size: int, layers: int) -> bytes:
    """`{"docs": ["   …"]}` padded to `size` bytes, gzip-compressed `layers` times."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as stream:
        stream.write(b'{"docs": ["')
        block = b" " * (1 << 20)
        for _ in range(size >> 20):
            stream.write(block)
        stream.write(b'"]}')
    body = buffer.getvalue()
    for _ in range(layers - 1):
        body = gzip.compress(body, compresslevel=9)
    return body


class SyntheticRecords:
    """N synthetic records without holding them; records in `changed` get version 1."""

    def __init__(self, count: int, changed: frozenset[int] = frozenset()) -> None:
        self.count = count
        self.changed = changed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, window: slice) -> list[dict[str, Any]]:
        indexes = range(*window.indices(self.count))
        return [synthetic_crew(i, 1 if i in self.changed else 0) for i in indexes]


class FakeUpstream:
    def __init__(self, records: Any = ()) -> None:
        self.records: Any = list(records) if isinstance(records, list | tuple) else records
        self.faults: dict[int, list[Fault]] = defaultdict(list)
        self.page_delay_seconds = 0.0
        self.never_ending = False
        self.requests: list[int] = []  # page numbers asked for, in order
        self.request_bodies: list[Any] = []
        self.user_agents: list[str] = []
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # --- faults -------------------------------------------------------------------------
    def fail(self, page: int, *faults: Fault) -> None:
        self.faults[page].extend(faults)

    # --- HTTP ---------------------------------------------------------------------------
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v4/crew", self.all_crew, methods=["GET"]),
                Route("/v4/crew/query", self.query_crew, methods=["POST"]),
                Route("/_fake", self.control, methods=["PUT"]),
            ]
        )

    async def control(self, request: Request) -> Response:
        """Replace the records and/or the per-page delay of a running stand-in."""
        body = await request.json()
        if "records" in body:
            self.records = list(body["records"])
        self.page_delay_seconds = float(body.get("page_delay_seconds", self.page_delay_seconds))
        return JSONResponse(
            {"records": len(self.records), "page_delay_seconds": self.page_delay_seconds}
        )

    async def all_crew(self, request: Request) -> Response:
        return JSONResponse(self.records[0 : len(self.records)])

    async def query_crew(self, request: Request) -> Response:
        body = await request.json()
        self.request_bodies.append(body)
        self.user_agents.append(request.headers.get("user-agent", ""))
        options = body.get("options", {})
        page, limit = int(options.get("page", 1)), int(options.get("limit", 10))
        self.requests.append(page)
        if self.page_delay_seconds:
            await asyncio.sleep(self.page_delay_seconds)
        envelope = self.envelope(page, limit)
        if self.faults.get(page):
            return await self.misbehave(self.faults[page].pop(0), envelope)
        return Response(json.dumps(envelope), media_type="application/json")

    def envelope(self, page: int, limit: int) -> dict[str, Any]:
        total = len(self.records)
        pages = max(1, math.ceil(total / limit))
        has_next = self.never_ending or page < pages
        return {
            "docs": self.records[(page - 1) * limit : page * limit],
            "totalDocs": total,
            "offset": (page - 1) * limit,
            "limit": limit,
            "totalPages": pages,
            "page": page,
            "pagingCounter": (page - 1) * limit + 1,
            "hasPrevPage": page > 1,
            "hasNextPage": has_next,
            "prevPage": page - 1 if page > 1 else None,
            "nextPage": page + 1 if has_next else None,
        }

    async def misbehave(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        handler: Callable[[Fault, dict[str, Any]], Any] = getattr(self, f"fault_{fault.kind}")
        return await handler(fault, envelope)

    async def fault_status(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        return JSONResponse({"error": "injected"}, status_code=fault.status, headers=fault.headers)

    async def fault_slow(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        await asyncio.sleep(fault.seconds)
        return JSONResponse(envelope)

    async def fault_reset(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        body = json.dumps(envelope).encode()

        async def half_then_break() -> AsyncIterator[bytes]:
            yield body[: len(body) // 2]
            raise ConnectionResetError("injected reset mid-body")

        headers = {"content-length": str(len(body))}
        return StreamingResponse(half_then_break(), media_type="application/json", headers=headers)

    async def fault_truncated(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        body = json.dumps(envelope)
        return Response(body[: len(body) // 2], media_type="application/json")

    async def fault_html(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        return Response("<html>maintenance</html>", media_type="text/html")

    async def fault_not_json(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        return Response("this is not json", media_type="application/json")

    async def fault_no_docs(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        return JSONResponse({k: v for k, v in envelope.items() if k != "docs"})

    async def fault_docs_not_list(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        return JSONResponse({**envelope, "docs": {"not": "a list"}})

    async def fault_repeat_page(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        return JSONResponse({**envelope, "hasNextPage": True, "nextPage": envelope["page"]})

    async def fault_oversized(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        """`size` bytes of a valid-looking body, streamed without a Content-Length."""

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"docs": ["'
            sent = 0
            while sent < fault.size:
                yield b"x" * 65536
                sent += 65536
            yield b'"]}'

        return StreamingResponse(chunks(), media_type="application/json")

    async def fault_body(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        """`body` as given, as JSON unless `headers` say otherwise."""
        headers = {"content-type": "application/json", **fault.headers}
        return Response(fault.body, headers=headers)

    async def fault_many_docs(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        """A page of `size` empty records, whatever limit was asked for."""
        body = b'{"docs": [' + b"{}," * (fault.size - 1) + b'{}], "hasNextPage": false}'
        return Response(body, media_type="application/json")

    async def fault_trickle(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        """The page, one byte every `seconds`."""
        body = json.dumps(envelope).encode()

        async def bytewise() -> AsyncIterator[bytes]:
            for index in range(len(body)):
                await asyncio.sleep(fault.seconds)
                yield body[index : index + 1]

        return StreamingResponse(bytewise(), media_type="application/json")

    async def fault_empty(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        return JSONResponse({**envelope, "docs": [], "totalDocs": 0, "hasNextPage": False})

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> "FakeUpstream":
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="fake-upstream")
        self._thread.start()
        while not self._server.started:
            threading.Event().wait(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--changed-every", type=int, default=0, help="version-1 every Nth record")
    parser.add_argument("--fixture", type=Path, help="serve this JSON array instead")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    changed = (
        frozenset(range(0, args.records, args.changed_every)) if args.changed_every else frozenset()
    )
    records: Any = SyntheticRecords(args.records, changed)
    if args.fixture:
        records = json.loads(args.fixture.read_text())
    upstream = FakeUpstream(records)
    uvicorn.run(upstream.app(), host=args.host, port=args.port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
