"""Read-side measurements: one uvicorn worker under 16 concurrent connections (wrk when
installed, else an async httpx client), URL by URL."""

import asyncio
import contextlib
import itertools
import math
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from bench.loads import connect, process, service_env
from bench.report import Row, progress
from tests.fake_upstream import COMMON_LAUNCH, free_port

CLIENTS = 16
# Every connection finishes at least this many requests of a URL, however slow it is.
REQUESTS_PER_CLIENT = 3
WRK_TIMEOUT = 60
# Each value matches a quarter of the synthetic records, independently of the others.
FILTERS = ["agency=NASA", "status=retired", "name=han", f"launch={COMMON_LAUNCH}"]
SORTS = ["name", "agency", "status", "updated_at"]


@dataclass(frozen=True)
class Service:
    base: str
    generator: str  # "wrk" or "httpx"
    seconds: int


@contextlib.contextmanager
def service(
    url: str, generator: str, seconds: int, warm: bool = True, **extra_env: str
) -> Iterator[Service]:
    """One uvicorn worker of the service on a free port; `warm`: after a second of load;
    `extra_env`: more settings."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
    command += ["--workers", "1", "--no-access-log", "--log-level", "warning"]
    env = {**service_env(url, "http://127.0.0.1:9"), "MIGRATE_ON_START": "false", **extra_env}
    tool = generator if generator != "auto" else ("wrk" if shutil.which("wrk") else "httpx")
    base = f"http://127.0.0.1:{port}"
    with process(command, env, f"{base}/healthz"):
        # a second of load first, so that the first URL measured does not pay for filling the
        # worker's connection pool
        if warm:
            (wrk if tool == "wrk" else httpx_load)(f"{base}/crew?limit=1", 1)
        yield Service(base, tool, seconds)


def filter_sets() -> list[str]:
    """No filter, each filter alone, each pair."""
    pairs = ["&".join(pair) for pair in itertools.combinations(FILTERS, 2)]
    return ["", *FILTERS, *pairs]


def list_query_matrix() -> list[str]:
    """Every filter set, sort and direction, with include_deleted both ways: 176 queries."""
    return [
        f"/crew?{filters + '&' if filters else ''}sort={direction}{sort}"
        f"&include_deleted={deleted}&limit=100"
        for filters in filter_sets()
        for sort in SORTS
        for direction in ("", "-")
        for deleted in ("false", "true")
    ]


def measure(svc: Service, path: str, label: str) -> Row:
    url = svc.base + path
    warm = httpx.get(url, timeout=60)  # also proves the URL answers 200
    if warm.status_code != 200:
        raise RuntimeError(f"{path}: {warm.status_code} {warm.text[:200]}")
    alone = httpx.get(url, timeout=60).elapsed.total_seconds()  # warm, one at a time
    load = wrk if svc.generator == "wrk" else httpx_load
    # A slow URL (a deep offset) runs long enough for every connection to finish a few
    # requests: a request still running when the load stops is not measured at all.
    seconds = max(svc.seconds, math.ceil(alone * CLIENTS * REQUESTS_PER_CLIENT))
    p50, p99, rps, errors = load(url, seconds)
    return progress(Row(label, p50, p99, rps, errors))


Measured = tuple[float | None, float | None, float, int]


def wrk(url: str, seconds: float) -> Measured:
    """p50, p99, req/s and failures. wrk leaves a request slower than its --timeout (2 s by
    default) out of the latencies and prints them as 0.00us when none finished in time, so the
    timeout is set far above any latency, and a run with no latency measured has none (not 0)."""
    command = ["wrk", "-t2", f"-c{CLIENTS}", f"-d{seconds}s", f"--timeout={WRK_TIMEOUT}s"]
    command += ["--latency", url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def millis(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", output).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    failed = int(errors.group(1)) if errors else 0
    failed += sum(map(int, socket_errors.groups())) if socket_errors else 0
    timed_out = int(socket_errors.group(4)) if socket_errors else 0
    done = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    if done <= timed_out:
        return None, None, rps, failed
    return millis("50%"), millis("99%"), rps, failed


def httpx_load(url: str, seconds: float) -> Measured:
    return asyncio.run(httpx_clients(url, seconds))


async def httpx_clients(url: str, seconds: float) -> Measured:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                ok = (await client.get(url)).status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append((time.perf_counter() - started) * 1000)
            errors += not ok

    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(CLIENTS)))
        elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49], cuts[98], len(latencies) / elapsed, errors


def list_reads(svc: Service) -> list[Row]:
    return [
        measure(svc, path, f"list: {path.removeprefix('/crew?')}") for path in list_query_matrix()
    ]


def deep_pages(svc: Service, records: int) -> list[Row]:
    """The last page of 100 in name order, by offset and by cursor, against the first page."""
    depth = records - 100
    before = httpx.get(f"{svc.base}/crew?sort=name&limit=1&offset={depth - 1}", timeout=60)
    cursor = before.json()["next"]
    return [
        measure(svc, "/crew?sort=name&limit=100", "deep: first page"),
        measure(svc, f"/crew?sort=name&limit=100&offset={depth}", f"deep: offset={depth:,}"),
        measure(svc, f"/crew?sort=name&limit=100&cursor={cursor}", f"deep: cursor at {depth:,}"),
    ]


def name_walks(svc: Service) -> list[Row]:
    """A name filter on a name sort whose matches all come last in name order: `vic` (Victor,
    the last first name). A walk from the first name would pass seven eighths of the table
    ascending; it starts at the first Victor instead (crew_name_trigrams)."""
    return [
        measure(svc, f"/crew?name=vic&sort={sort}&limit=100", f"name walk: name=vic&sort={sort}")
        for sort in ("name", "-name")
    ]


def member_reads(svc: Service) -> list[Row]:
    return [measure(svc, f"/crew/{7:024x}", "member: GET /crew/{id}")]


def as_of_reads(svc: Service, url: str) -> list[Row]:
    """Reads as of the start of the last run (after the first ingest, before the 1% change
    was loaded): the crew's sort indexes merged with the versions that run closed."""
    connection = connect(url)
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(started_at) FROM ingest_runs WHERE NOT dry_run")
        as_of = urllib.parse.quote(cursor.fetchone()[0].isoformat())
    connection.close()
    paths = [
        f"/crew?agency=NASA&limit=100&as_of={as_of}",
        f"/crew?name=ann&limit=100&as_of={as_of}",
        f"/crew?sort=-updated_at&limit=100&as_of={as_of}",
        f"/crew/{7:024x}?as_of={as_of}",
    ]
    return [
        measure(svc, path, f"as_of: {path.split('&as_of=')[0].split('?as_of=')[0]}")
        for path in paths
    ]


def status_page(svc: Service, url: str, requests: int = 50) -> list[Row]:
    """`GET /` with the bench's crew in place: the first request of the worker (crew counts
    computed; in the notes), then `requests` sequential ones (counts cached until the next run),
    for HTML and JSON; and the crew-counts statement alone, as a page pays it once per run."""
    from app.status.summary import CREW_COUNTS_SQL, TOP_AGENCIES

    rows = []
    with httpx.Client() as client:
        for label, headers in (("HTML", {}), ("JSON", {"Accept": "application/json"})):
            times, size = [], 0
            for _ in range(requests + 1):
                started = time.perf_counter()
                response = client.get(f"{svc.base}/", headers=headers, timeout=30)
                times.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
                size = len(response.content)
            cuts = statistics.quantiles(times[1:], n=100)
            note = f"first request {times[0]:.1f} ms, {size:,} bytes, {requests} sequential"
            rows.append(progress(Row(f"status: GET / {label}", cuts[49], cuts[98], note=note)))
    connection = connect(url)
    with connection.cursor() as cursor:
        counts_ms = []
        for _ in range(5):
            started = time.perf_counter()
            cursor.execute(str(CREW_COUNTS_SQL).replace(":top", str(TOP_AGENCIES)))
            cursor.fetchall()
            counts_ms.append((time.perf_counter() - started) * 1000)
    connection.close()
    note = f"median {statistics.median(counts_ms):.1f} ms of 5, once per successful run"
    return [*rows, progress(Row("status: crew counts statement alone", note=note))]
