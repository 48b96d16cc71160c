"""Webhook delivery, measured on a real service process (not part of `make bench` or the tests).

1. Latency from a run's end (its `finished_at`, written in the transaction that commits it) to
   the receiver's arrival, over --runs runs, with the default poll interval.
2. A receiver that hangs for 15 s on every call (the send timeout): the same runs and API reads
   again, each compared with the same measure against a receiver that answers at once.

Usage: `uv run python -m bench.webhooks [--runs 100]`; it uses a database of its own
(`crew_etl_bench_webhooks`) on the server of DATABASE_URL, or on the embedded server.
"""

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import httpx

from bench.loads import connect, process, service_env, upstream
from bench.run import bench_database, drop_databases
from tests.fake_upstream import free_port
from tests.webhook_receiver import Receiver, Step, new_secret, running_receiver

PART_SECONDS = 45  # three 15-second hangs of every sending thread
UVICORN = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name}: n={len(values)} p50={percentile(values, 0.5) * 1000:.0f} ms "
        f"p99={percentile(values, 0.99) * 1000:.0f} ms max={max(values) * 1000:.0f} ms"
    )


@contextmanager
def service(database: str, upstream_url: str, receiver: Receiver) -> Iterator[str]:
    port = free_port()
    env = {
        **service_env(database, upstream_url),
        "INGEST_PAGE_SIZE": "5",
        "WEBHOOK_URL": receiver.url,
        "WEBHOOK_SECRET": receiver.secret or "",
        "WEBHOOK_EVENTS": "ingest.run.succeeded,ingest.run.failed",
    }
    url = f"http://127.0.0.1:{port}"
    with process([*UVICORN, "--port", str(port)], env, f"{url}/readyz"):
        yield url


def run_once(client: httpx.Client) -> tuple[int, float]:
    """One run, start to end as the API reports it; returns its id and wall time."""
    started = time.monotonic()
    run_id = int(client.post("/ingest").json()["id"])
    while client.get(f"/ingest/{run_id}").json()["status"] in ("queued", "running"):
        time.sleep(0.01)
    return run_id, time.monotonic() - started


def finished_at(database: str, run_ids: list[int]) -> dict[int, float]:
    connection = connect(database)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id, finished_at FROM ingest_runs WHERE id = ANY(%s)", (run_ids,))
            rows: list[tuple[int, datetime]] = cursor.fetchall()
    finally:
        connection.close()
    return {run_id: at.timestamp() for run_id, at in rows}


def delivery_latency(database: str, url: str, receiver: Receiver, runs: int) -> list[float]:
    with httpx.Client(base_url=url, timeout=30) as client:
        run_ids = [run_once(client)[0] for _ in range(runs)]
    deadline = time.monotonic() + 60
    while len(receiver.received) < runs and time.monotonic() < deadline:
        time.sleep(0.05)
    ends = finished_at(database, run_ids)
    arrivals = {entry.event["data"]["id"]: entry.arrived_at for entry in receiver.received}
    assert len(arrivals) == runs, f"{len(arrivals)} of {runs} runs delivered"
    return [arrivals[run_id] - ends[run_id] for run_id in run_ids]


def runs_and_reads(url: str, seconds: float) -> tuple[list[float], list[float]]:
    """For `seconds`: a run, then 20 reads (a page of crew, a page of runs), and again."""
    run_times: list[float] = []
    read_times: list[float] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=30) as client:
        while time.monotonic() < deadline:
            run_times.append(run_once(client)[1])
            for index in range(20):
                started = time.monotonic()
                path = "/crew?limit=100" if index % 2 else "/ingest?limit=20"
                assert client.get(path).status_code == 200
                read_times.append(time.monotonic() - started)
    return run_times, read_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    database = bench_database("crew_etl_bench_webhooks")
    try:
        with upstream(18) as upstream_url, running_receiver(new_secret()) as receiver:
            with service(database, upstream_url, receiver) as url:
                latencies = delivery_latency(database, url, receiver, args.runs)
                print(summary("run end -> receiver", latencies))
                before = runs_and_reads(url, PART_SECONDS)
                receiver.default = Step(hang_seconds=15)  # every call from now on
                sent = len(receiver.received)
                hung = runs_and_reads(url, PART_SECONDS)
                hanging = len(receiver.received) - sent
                receiver.default = Step()
                after = runs_and_reads(url, PART_SECONDS)
            for name, part in (("answering", before), ("hanging 15 s", hung), ("answering", after)):
                print(summary(f"run, receiver {name}", part[0]))
                print(summary(f"read, receiver {name}", part[1]))
            print(f"calls the receiver held for 15 s while it hung: {hanging}")
    finally:
        drop_databases([database])


if __name__ == "__main__":
    main()
