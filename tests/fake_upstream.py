"""A local stand-in for the SpaceX API with switchable faults, for tests and the benchmark.

Serves `GET /v4/crew` (the whole array) and `POST /v4/crew/query` from a list of records or from
N synthetic records made on the fly, as the real server does (r-spacex/SpaceX-API's
`Crew.paginate(query, options)` with mongoose-paginate-v2 1.7.0): natural order unless `sort`
asks for `{"_id": ±1}`, the `{"_id": {"$gt"|"$gte"|"$lt"|"$lte": id}}` filters, `page`, `offset`,
`limit` (default 10; not a positive number: no docs), `pagination: false`, the envelope's keys in
its order, `text/plain` errors, an `ETag` and `Cache-Control: max-age=300` on every page.

Faults are queued per page: each request for that page consumes the next fault, then the page is
served normally. A keyset request (`_id > x`) counts as the page its first member would be on.
`between_requests` plays a concurrent writer: it is called with the stand-in after each page is
served, and may `delete`, `insert` or `update` records before the next request.

Run standalone: `python -m tests.fake_upstream --records 200000 --port 8099`, or
`--fixture tests/fixtures/crew_v4.json` to serve a recording. `PUT /_fake` with
`{"records": [...], "page_delay_seconds": 5}` changes what a running stand-in serves (the
container smoke test uses it to make a slow run of changed records).
"""

import argparse
import asyncio
import functools
import gzip
import hashlib
import http
import io
import json
import math
import operator
import re
import socket
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.client import responses as STATUS_CODES
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests import synthetic_sets

# Synthetic records: each agency, each status, the names containing "han" (Shannon, Hannah) and
# COMMON_LAUNCH each match a quarter of the records, independently of one another; every other
# launch id is shared by about 0.2% of them.
AGENCIES = ("NASA", "SpaceX", "ESA", "JAXA")
STATUSES = ("active", "inactive", "retired", "unknown")
FIRST_NAMES = ("Anna", "Robert", "Joanne", "Victor", "Shannon", "Hannah", "Matthias", "Koichi")
COMMON_LAUNCH = f"{0xC0FFEE:024x}"
UPSTREAM_ID = re.compile(r"[0-9a-f]{24}")
ENDLESS = 10**12  # what a never-ending listing counts before its first page


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
    """N synthetic records without holding them; records in `changed` get version 1. Their ids
    grow with their index, so natural order is id order, and `after` is a keyset read."""

    def __init__(
        self,
        count: int,
        changed: frozenset[int] = frozenset(),
        start: int = 0,
        dataset: str = "current",
    ) -> None:
        self.count = count
        self.changed = changed
        self.start = start
        self.dataset = dataset

    def __len__(self) -> int:
        return max(self.count - self.start, 0)

    def __getitem__(self, window: slice) -> list[dict[str, Any]]:
        indexes = range(*window.indices(len(self)))
        return [self.record(self.start + i) for i in indexes]

    def record(self, index: int) -> dict[str, Any]:
        version = 1 if index in self.changed else 0
        if self.dataset == "current":
            return synthetic_crew(index, version)
        return synthetic_sets.SETS[self.dataset](index, self.count, version)

    def after(self, record_id: str) -> "SyntheticRecords":
        start = max(int(record_id, 16) + 1, self.start) if UPSTREAM_ID.fullmatch(record_id) else 0
        return SyntheticRecords(self.count, self.changed, start, self.dataset)


class FakeUpstream:
    def __init__(self, records: Any = ()) -> None:
        self.records: Any = list(records) if isinstance(records, list | tuple) else records
        self.faults: dict[int, list[Fault]] = defaultdict(list)
        self.page_delay_seconds = 0.0
        self.never_ending = False
        self.endless = 0
        self.endless_served = 0
        self.between_requests: Callable[[FakeUpstream], None] | None = None
        self.requests: list[int] = []  # page numbers asked for, in order
        self.request_bodies: list[Any] = []
        self.request_urls: list[str] = []
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
                # behind a proxy's path prefix, as SPACEX_API_URL may name one
                Route("/{prefix:path}/v4/crew/query", self.query_crew, methods=["POST"]),
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
        try:
            body = json.loads(await request.body() or b"{}")
            query, options = body.get("query") or {}, body.get("options") or {}
            selected = self.select(dict(query), options.get("sort"))
        except (ValueError, AttributeError, TypeError) as exc:
            return Response(f"Bad Request: {exc}", status_code=400, media_type="text/plain")
        self.request_bodies.append(body)
        self.request_urls.append(str(request.url))
        self.user_agents.append(request.headers.get("user-agent", ""))
        envelope, page = self.paginate(selected, options)
        self.requests.append(page)
        if self.page_delay_seconds:
            await asyncio.sleep(self.page_delay_seconds)
        try:
            if self.faults.get(page):
                return await self.misbehave(self.faults[page].pop(0), envelope)
            return page_response(envelope)
        finally:
            if self.between_requests is not None:
                self.between_requests(self)

    def select(self, query: dict[str, Any], sort: Any) -> Any:
        """The records matching `query`, in natural order or sorted by id."""
        if sort not in (None, {}, {"_id": 1}, {"_id": -1}):
            raise ValueError(f"unsupported sort {sort!r}")
        if isinstance(self.records, SyntheticRecords):
            return self.select_synthetic(query, sort)
        keyed = list(zip(anchored_keys(self.records), self.records, strict=True))
        if sort:
            keyed.sort(key=lambda pair: pair[0], reverse=sort["_id"] == -1)
        for op, bound in (query.pop("_id", None) or {}).items():
            compare = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt}[op]
            limit = (str(bound).lower(), 0)
            keyed = [(key, r) for key, r in keyed if compare(key, limit)]
        if query:
            raise ValueError(f"unsupported query {query!r}")
        return [r for _, r in keyed]

    def select_synthetic(self, query: dict[str, Any], sort: Any) -> SyntheticRecords:
        bounds = query.pop("_id", None) or {}
        if query or set(bounds) - {"$gt"} or sort == {"_id": -1}:
            raise ValueError(f"the synthetic records serve `_id > x` in id order only: {query!r}")
        return self.records.after(str(bounds["$gt"]).lower()) if bounds else self.records

    def paginate(self, matching: Any, options: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """mongoose-paginate-v2's envelope for `matching`, and the page number faults go by."""
        limit = int_or_zero(options.get("limit", 10))
        if options.get("pagination") is False:
            limit, docs = 0, matching[0 : len(matching)]
        meta: dict[str, Any] = {"totalDocs": len(matching)}
        if "offset" in options:
            skip = int_or_zero(options["offset"])
            meta["offset"] = skip
            page = math.ceil((skip + 1) / limit) if limit else 1
        elif "page" in options:
            page = max(int_or_zero(options["page"]), 1)
            skip = (page - 1) * limit
        else:
            skip, page = 0, 1
            meta["offset"] = 0
        if options.get("pagination") is not False:
            docs = matching[skip : skip + limit] if limit > 0 else []
        pages = math.ceil(len(matching) / limit) or 1 if limit > 0 else 1
        has_next = limit > 0 and (self.never_ending or page < pages)
        if self.never_ending:  # made-up members after the real ones, and counts that add up
            if not docs:
                self.endless += limit
                docs = [endless_crew(self.endless + i) for i in range(limit)]
            meta["totalDocs"] = ENDLESS - self.endless_served
            self.endless_served += len(docs)
        meta.update(
            limit=limit if options.get("pagination") is not False else len(matching),
            totalPages=pages,
            page=page if limit > 0 else 1,
            pagingCounter=(page - 1) * limit + 1,
            hasPrevPage=page > 1 or bool(meta.get("offset")),
            hasNextPage=has_next,
            prevPage=page - 1 if page > 1 else (1 if meta.get("offset") else None),
            nextPage=page + 1 if has_next else None,
        )
        return {"docs": docs, **meta}, self.fault_page(matching, options, limit, page)

    def fault_page(self, matching: Any, options: dict[str, Any], limit: int, page: int) -> int:
        """The page number a request stands for: a keyset request (`_id > x`, no page or
        offset) counts as the page of the whole listing its first member is on."""
        if not limit or "page" in options or "offset" in options:
            return page
        if self.never_ending or not len(matching):
            return len(self.requests) + 1
        if isinstance(matching, SyntheticRecords):
            return matching.start // limit + 1
        first = sort_key(matching[0])
        return sum(1 for r in self.records if sort_key(r) < first) // limit + 1

    def envelope(self, page: int, limit: int) -> dict[str, Any]:
        """Page `page` of the listing walked by id, as a keyset request for it is answered."""
        listing = self.select({}, {"_id": 1})
        after = listing[(page - 1) * limit : len(listing)]
        return {
            "docs": after[:limit],
            "totalDocs": len(after),
            "offset": 0,
            "limit": limit,
            "hasNextPage": len(after) > limit,
        }

    # --- a concurrent writer --------------------------------------------------------------
    def delete(self, record_id: str) -> None:
        self.records = [r for r in self.records if r["id"] != record_id]

    def insert(self, record: dict[str, Any], position: int | None = None) -> None:
        self.records = list(self.records)
        self.records.insert(len(self.records) if position is None else position, record)

    def update(self, record: dict[str, Any]) -> None:
        self.records = [record if r["id"] == record["id"] else r for r in self.records]

    async def misbehave(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        handler: Callable[[Fault, dict[str, Any]], Any] = getattr(self, f"fault_{fault.kind}")
        return await handler(fault, envelope)

    async def fault_status(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        """An error as the real server sends one: `text/plain`, its reason as the body."""
        reason = http.HTTPStatus(fault.status).phrase if fault.status in STATUS_CODES else "Error"
        body = fault.body or reason.encode()
        return Response(body, fault.status, fault.headers, media_type="text/plain")

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

    async def fault_html_error(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        """An error status with an HTML page: a proxy or CDN speaking, not the API."""
        return Response("<html>Bad gateway</html>", fault.status, media_type="text/html")

    async def fault_challenge(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        """A CDN's challenge page, as Cloudflare answers a client it doubts."""
        headers = {"cf-mitigated": "challenge"}
        return Response("<html>Just a moment...</html>", 403, headers, media_type="text/html")

    async def fault_redirect(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        headers = {"location": fault.headers.get("location", "https://elsewhere.test/v4/crew")}
        return Response(b"", fault.status, headers)

    async def fault_slow_headers(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        """Nothing at all for `seconds`, then the page: headers that never come in time."""
        await asyncio.sleep(fault.seconds)
        return page_response(envelope)

    async def fault_not_json(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        return Response("this is not json", media_type="application/json")

    async def fault_no_docs(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        return JSONResponse({k: v for k, v in envelope.items() if k != "docs"})

    async def fault_docs_not_list(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        return JSONResponse({**envelope, "docs": {"not": "a list"}})

    async def fault_repeat_page(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        """The listing's first page again, as a server that ignores the query would."""
        first, _ = self.paginate(self.select({}, {"_id": 1}), {"limit": envelope["limit"]})
        return JSONResponse({**first, "hasNextPage": True})

    async def fault_skip_page(self, fault: Fault, envelope: dict[str, Any]) -> Response:
        """The page after the one asked for, with this one's counts: members skipped."""
        limit = envelope["limit"]
        return JSONResponse({**envelope, "docs": self.records_after(envelope, limit)[:limit]})

    def records_after(self, envelope: dict[str, Any], limit: int) -> list[Any]:
        last = sort_key(envelope["docs"][-1]) if envelope["docs"] else ""
        return self.select({"_id": {"$gt": last}}, {"_id": 1})

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


def endless_crew(index: int) -> dict[str, Any]:
    """A made-up member whose id sorts after every real and synthetic one."""
    return {**synthetic_crew(index), "id": f"ffffffff{index:016x}"}


def sort_key(record: Any) -> str:
    """A record's id as the server sorts it, lower case; "" for a record without an id of 24 hex
    digits (tests send such garbage, which a real collection cannot hold)."""
    value = record.get("id") if isinstance(record, dict) else None
    return value.lower() if isinstance(value, str) and UPSTREAM_ID.fullmatch(value.lower()) else ""


def anchored_keys(records: Any) -> Iterator[tuple[str, int]]:
    """Sort keys that keep a garbage record right after the record before it in natural order,
    so it is served where a test put it (a page ending in garbage serves it again)."""
    anchor = ""
    for record in records:
        key = sort_key(record)
        if key:
            anchor = key
        yield (key, 0) if key else (anchor, 1)


def int_or_zero(value: Any) -> int:
    """JavaScript's parseInt as mongoose-paginate uses it: not a number gives 0 here."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def page_response(envelope: dict[str, Any]) -> Response:
    """A page as the real server sends it: JSON with an ETag, cached for five minutes."""
    body = json.dumps(envelope, separators=(",", ":")).encode()
    headers = {
        "etag": f'W/"{hashlib.md5(body).hexdigest()}"',
        "cache-control": "max-age=300",
    }
    return Response(body, headers=headers, media_type="application/json; charset=utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--changed-every", type=int, default=0, help="version-1 every Nth record")
    parser.add_argument("--fixture", type=Path, help="serve this JSON array instead")
    sets = ["current", *synthetic_sets.SETS]
    parser.add_argument("--dataset", choices=sets, default="current", help="synthetic_sets.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    changed = (
        frozenset(range(0, args.records, args.changed_every)) if args.changed_every else frozenset()
    )
    records: Any = SyntheticRecords(args.records, changed, dataset=args.dataset)
    if args.fixture:
        records = json.loads(args.fixture.read_text())
    upstream = FakeUpstream(records)
    uvicorn.run(upstream.app(), host=args.host, port=args.port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
