"""Reads while runs are followed live: a few read queries under wrk (bench/reads.py's load: one
uvicorn worker, 16 connections), quiet, then again while STREAMS clients follow a slow run over
`GET /ingest/{id}/events` (a page every PAGE_DELAY seconds, so events keep coming); and what
the streams cost the service in resident memory. Prints one markdown table and `uptime`.

Usage: `uv run python -m bench.streams [--records 20000] [--streams 100] [--seconds 5]`. It uses
its own database (`crew_etl_bench_streams`) on the configured or embedded server.
"""

import argparse
import asyncio
import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.loads import migrate, process, service_env, upstream
from bench.reads import Service, measure
from bench.report import Row, render
from bench.run import bench_database, drop_databases
from tests.fake_upstream import free_port

PAGE_SIZE = 500
PAGE_DELAY = 1.0
READS = {
    "list: first page": "/crew?limit=100",
    "list: agency=NASA&sort=-updated_at": "/crew?agency=NASA&sort=-updated_at&limit=100",
    "member: GET /crew/{id}": f"/crew/{7:024x}",
    "history: GET /crew/{id}/history": f"/crew/{7:024x}/history",
}


@contextlib.contextmanager
def service(url: str, upstream_url: str, streams: int) -> Iterator[tuple[str, int]]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
    command += ["--workers", "1", "--no-access-log", "--log-level", "warning"]
    env = service_env(url, upstream_url)
    env |= {
        "MIGRATE_ON_START": "false",
        "INGEST_PAGE_SIZE": str(PAGE_SIZE),
        "EVENTS_MAX_STREAMS": str(streams),
    }
    base = f"http://127.0.0.1:{port}"
    with process(command, env, f"{base}/healthz") as pid:
        yield base, pid


def resident_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Followers:
    """`count` clients following one run, in a thread of this process with its own loop."""

    def __init__(self, path: str, count: int) -> None:
        self.path, self.count = path, count
        self.open = 0
        self.events = 0
        self.all_open = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self.follow_all()))

    async def follow_all(self) -> None:
        limits = httpx.Limits(max_connections=self.count + 1)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            tasks = [asyncio.create_task(self.follow(client)) for _ in range(self.count)]
            while not self.stop.is_set():
                await asyncio.sleep(0.1)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def follow(self, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", self.path) as response:
            response.raise_for_status()
            self.open += 1
            if self.open == self.count:
                self.all_open.set()
            async for line in response.aiter_lines():
                self.events += line.startswith("event:")


def slow_run(base: str, upstream_url: str) -> int:
    """A re-ingest of every record with a page served every PAGE_DELAY s: a live run to follow."""
    httpx.put(f"{upstream_url}/_fake", json={"page_delay_seconds": PAGE_DELAY}, timeout=10)
    response = httpx.post(f"{base}/ingest", timeout=30)
    response.raise_for_status()
    return int(response.json()["id"])


def measure_reads(base: str, seconds: int, when: str) -> list[Row]:
    svc = Service(base, "wrk", seconds)
    return [measure(svc, path, f"{label} ({when})") for label, path in READS.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    url = bench_database("crew_etl_bench_streams")
    rows: list[Row] = []
    try:
        migrate(url)
        with (
            upstream(args.records) as upstream_url,
            service(url, upstream_url, args.streams) as (
                base,
                pid,
            ),
        ):
            first = httpx.post(f"{base}/ingest", timeout=30).json()["id"]
            with httpx.stream("GET", f"{base}/ingest/{first}/events", timeout=600) as response:
                for _ in response.iter_lines():  # until the run's stream closes at its end
                    pass
            rows += measure_reads(base, args.seconds, "quiet")
            before = resident_kb(pid)
            run_id = slow_run(base, upstream_url)
            followers = Followers(f"{base}/ingest/{run_id}/events", args.streams)
            followers.thread.start()
            if not followers.all_open.wait(60):
                raise RuntimeError(f"only {followers.open} of {args.streams} streams opened")
            with_streams = resident_kb(pid)
            rows += measure_reads(base, args.seconds, f"{args.streams} streams open")
            refused = httpx.get(f"{base}/ingest/{run_id}/events", timeout=10).status_code
            followers.stop.set()
            followers.thread.join()
            per_stream = (with_streams - before) / args.streams
            note = (
                f"service RSS {before:,} kB before, {with_streams:,} kB with {args.streams} "
                f"streams: {per_stream:.1f} kB a stream; {followers.events:,} events received; "
                f"stream {args.streams + 1}: {refused}"
            )
            rows.append(Row(f"{args.streams} streams: memory", note=note))
    finally:
        drop_databases([url])
    print(render(rows))
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout)


if __name__ == "__main__":
    main()
