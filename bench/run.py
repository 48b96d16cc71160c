"""Benchmark: N synthetic crew records through the real ingest path, against the physical limit.

Steps, all on the same data in one run:
1. baseline: fetch the whole array once (`GET /v4/crew`) and `COPY` it into a table like `crew`;
2. first ingest: `crew-etl ingest` in its own process (paged `POST /v4/crew/query`, page size
   1000, validation, load, run record), wall time and peak RSS of that process;
3. re-ingest of the same data, then of data with 1% of the records changed;
4. reads under 16 concurrent clients against one uvicorn worker (wrk when installed, else an
   async httpx client);
5. the status page `GET /`, HTML and JSON, one client after another.

It uses its own database, `crew_etl_bench`, on the server of DATABASE_URL or on the embedded
server, and prints one markdown table. Usage: `make bench` or `make bench N=20000`.
"""

import argparse
import asyncio
import contextlib
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg2
from sqlalchemy.engine import make_url

from app.config import settings
from app.db import database_url
from tests.fake_upstream import free_port

PROJECT = Path(__file__).resolve().parent.parent
BENCH_DB = os.environ.get("BENCH_DB", "crew_etl_bench")
BENCH_DB_BEFORE_VERSIONS = f"{BENCH_DB}_before_versions"
# The last commit on main before crew versions: its first ingest is the yardstick for ours.
BEFORE_VERSIONS = "3a91d88"
CLIENTS = 16


@dataclass
class Load:
    name: str
    seconds: float
    records: int
    peak_rss_mb: float | None
    rows_written: int | None


@dataclass
class Reads:
    url: str
    p50_ms: float
    p99_ms: float
    rps: float
    errors: int


def wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def process(command: list[str], env: dict[str, str], ready_url: str) -> Iterator[None]:
    child = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for(ready_url)
        yield
    finally:
        child.terminate()
        child.wait(timeout=30)


@contextlib.contextmanager
def upstream(records: int, changed_every: int = 0) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "tests.fake_upstream", "--records", str(records)]
    command += ["--port", str(port), "--changed-every", str(changed_every)]
    url = f"http://127.0.0.1:{port}"
    with process(command, dict(os.environ), f"{url}/v4/crew/query"):
        yield url


def bench_database(name: str = BENCH_DB) -> str:
    """A database of our own on the configured (or embedded) server, created fresh."""
    server_url = make_url(database_url())
    admin = psycopg2.connect(server_url.set(drivername="postgresql").render_as_string(False))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cursor.execute(f"CREATE DATABASE {name}")
    admin.close()
    return server_url.set(database=name).render_as_string(hide_password=False)


def connect(url: str) -> "psycopg2.extensions.connection":
    return psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(False))


def service_env(url: str, upstream_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "SPACEX_API_URL": upstream_url,
        "INGEST_PAGE_SIZE": "1000",
        "INGEST_MAX_DELETE_FRACTION": "1",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
    }


def physical_limit(url: str, upstream_url: str, records: int) -> Load:
    """One GET of the whole array, one COPY into an empty table shaped like `crew`."""
    connection = connect(url)
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS crew_baseline")
        cursor.execute("CREATE TABLE crew_baseline (LIKE crew INCLUDING ALL)")
    connection.commit()
    started = time.perf_counter()
    body = httpx.get(f"{upstream_url}/v4/crew", timeout=300).json()
    with connection.cursor() as cursor:
        columns = "id, name, status, agency, image, wikipedia, launches"
        buffer = io.StringIO("".join(map(copy_row, body)))
        cursor.copy_expert(f"COPY crew_baseline ({columns}) FROM STDIN", buffer)
    connection.commit()
    seconds = time.perf_counter() - started
    connection.close()
    return Load("baseline: 1 GET + COPY", seconds, records, None, records)


COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_row(record: dict[str, Any]) -> str:
    """One row in COPY text format."""
    fields = ("name", "status", "agency", "image", "wikipedia")
    values = ("\\N" if record[f] is None else record[f].translate(COPY_ESCAPES) for f in fields)
    launches = "{" + ",".join(record["launches"]) + "}"
    return "\t".join([record["id"], *values, launches]) + "\n"


def written_rows(url: str) -> int:
    """Inserted + updated tuples of `crew` so far, once the statistics have settled."""
    connection = connect(url)
    connection.autocommit = True
    last = -1
    with connection.cursor() as cursor:
        for _ in range(50):
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables WHERE relname = 'crew'"
            )
            now = int(cursor.fetchone()[0])
            if now == last:
                break
            last = now
            time.sleep(0.3)
    connection.close()
    return last


def ingest(name: str, url: str, upstream_url: str, records: int, project: Path = PROJECT) -> Load:
    """`crew-etl ingest` in a child process, its peak RSS sampled from /proc (VmHWM).

    (rusage's ru_maxrss is no good here: Linux carries the parent's high-water mark into the
    child across fork and exec, and this process holds the whole baseline array.)
    """
    before = written_rows(url)
    command = [sys.executable, "-m", "app.cli", "ingest", "--allow-mass-delete"]
    started = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=project, env=service_env(url, upstream_url), stdout=subprocess.DEVNULL
    )
    peak_kb = 0
    while child.poll() is None:
        peak_kb = max(peak_kb, high_water_kb(child.pid))
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"{name}: crew-etl ingest exited {child.returncode}")
    return Load(name, seconds, records, peak_kb / 1024, written_rows(url) - before)


def table_writes(url: str) -> dict[str, int]:
    """Tuples inserted, updated or deleted so far per table, but for the runs' own records."""
    connection = connect(url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables "
            "WHERE relname NOT IN ('ingest_runs', 'alembic_version', 'crew_baseline')"
        )
        writes = dict(cursor.fetchall())
    connection.close()
    return writes


def ingest_counting_writes(
    name: str, url: str, upstream_url: str, records: int
) -> tuple[Load, dict[str, int]]:
    """An ingest, and the rows it wrote per table (crew, versions, changes, rejects)."""
    before = table_writes(url)
    load = ingest(name, url, upstream_url, records)
    after = table_writes(url)
    return load, {table: after[table] - before.get(table, 0) for table in sorted(after)}


def first_ingest_before_versions(upstream_url: str, records: int) -> Load | None:
    """The first ingest of the code before crew versions existed (BEFORE_VERSIONS, exported
    from git), into a database of its own, for the ratio the issue asks of the versioned one."""
    with tempfile.TemporaryDirectory(prefix="crew-etl-before-versions-") as tree:
        archive = subprocess.run(
            ["git", "archive", BEFORE_VERSIONS], cwd=PROJECT, capture_output=True, check=False
        )
        if archive.returncode != 0:
            print("(no git history: first ingest before versions not measured)", file=sys.stderr)
            return None
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        url = bench_database(BENCH_DB_BEFORE_VERSIONS)
        migrate_with(Path(tree), url)
        return ingest("first ingest, before versions", url, upstream_url, records, Path(tree))


def migrate_with(project: Path, url: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        cwd=project,
        env=service_env(url, ""),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def versions_report(before: Load | None, first: Load, writes: dict[str, dict[str, int]]) -> str:
    lines = ["", "Versions: rows each ingest wrote per table (pg_stat_user_tables)", ""]
    tables = sorted({table for counts in writes.values() for table in counts})
    lines += ["| step | " + " | ".join(tables) + " |", "| --- |" + " ---: |" * len(tables)]
    for step, counts in writes.items():
        lines.append(f"| {step} | " + " | ".join(f"{counts.get(t, 0):,}" for t in tables) + " |")
    if before is not None:
        lines += [
            "",
            f"First ingest with versions {first.seconds:.2f} s, before versions "
            f"({BEFORE_VERSIONS}) {before.seconds:.2f} s: {first.seconds / before.seconds:.2f}x",
        ]
    return "\n".join(lines)


def high_water_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def read_urls(port: int) -> list[str]:
    base = f"http://127.0.0.1:{port}"
    return [
        f"{base}/crew?agency=NASA&limit=100",
        f"{base}/crew?name=ann&limit=100",
        f"{base}/crew/{7:024x}",
    ]


def wrk(url: str, seconds: int) -> Reads:
    command = ["wrk", "-t2", f"-c{CLIENTS}", f"-d{seconds}s", "--latency", url]
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
    return Reads(url, millis("50%"), millis("99%"), rps, failed)


async def httpx_load(url: str, seconds: int) -> Reads:
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
    return Reads(url, cuts[49], cuts[98], len(latencies) / elapsed, errors)


def read_load(url: str, seconds: int, generator: str) -> tuple[str, list[Reads]]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:app",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    env = {**service_env(url, "http://127.0.0.1:9"), "MIGRATE_ON_START": "false"}
    results = []
    tool = generator if generator != "auto" else ("wrk" if shutil.which("wrk") else "httpx")
    with process(command, env, f"http://127.0.0.1:{port}/healthz"):
        for target in read_urls(port):
            httpx.get(target, timeout=30)  # warm up
            results.append(
                wrk(target, seconds) if tool == "wrk" else asyncio.run(httpx_load(target, seconds))
            )
    return tool, results


def status_page(url: str, requests: int = 50) -> str:
    """`GET /` with the bench's crew in place: the first request of a fresh process (crew
    counts computed), then `requests` sequential ones (counts cached until the next run), for
    HTML and JSON; and the crew-counts statement alone, as a page pays it once per run."""
    from app.status.summary import CREW_COUNTS_SQL, TOP_AGENCIES

    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
    command += ["--no-access-log", "--log-level", "warning"]
    env = {**service_env(url, "http://127.0.0.1:9"), "MIGRATE_ON_START": "false"}
    rows = []
    with process(command, env, f"http://127.0.0.1:{port}/healthz"), httpx.Client() as client:
        for label, headers in (("HTML", {}), ("JSON", {"Accept": "application/json"})):
            times, size = [], 0
            for _ in range(requests + 1):
                started = time.perf_counter()
                response = client.get(f"http://127.0.0.1:{port}/", headers=headers, timeout=30)
                times.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
                size = len(response.content)
            cuts = statistics.quantiles(times[1:], n=100)
            rows.append(
                f"| GET / {label} | {times[0]:.1f} | {cuts[49]:.1f} | {cuts[98]:.1f} | {size:,} |"
            )
    connection = connect(url)
    with connection.cursor() as cursor:
        counts_ms = []
        for _ in range(5):
            started = time.perf_counter()
            cursor.execute(str(CREW_COUNTS_SQL).replace(":top", str(TOP_AGENCIES)))
            cursor.fetchall()
            counts_ms.append((time.perf_counter() - started) * 1000)
    connection.close()
    return "\n".join(
        [
            f"Status page, {requests} sequential requests each after a first one, 1 uvicorn worker",
            "",
            "| request | first ms | p50 ms | p99 ms | bytes |",
            "| --- | ---: | ---: | ---: | ---: |",
            *rows,
            "",
            f"Crew counts statement alone (once per successful run): "
            f"median {statistics.median(counts_ms):.1f} ms of 5",
        ]
    )


def database_label() -> str:
    url = make_url(database_url())
    return f"{url.host}:{url.port or 5432}" if url.host else "embedded PostgreSQL (unix socket)"


def report(records: int, loads: list[Load], tool: str, reads: list[Reads]) -> str:
    baseline = loads[0].seconds
    lines = [
        f"N = {records:,} records, {os.cpu_count()} cores, database {database_label()}",
        "",
        "| step | wall s | records/s | peak RSS MB | x COPY baseline | rows written |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for load in loads:
        rss = f"{load.peak_rss_mb:.0f}" if load.peak_rss_mb is not None else "-"
        lines.append(
            f"| {load.name} | {load.seconds:.2f} | {load.records / load.seconds:,.0f} | {rss} "
            f"| {load.seconds / baseline:.2f} | {load.rows_written:,} |"
        )
    lines += [
        "",
        f"Reads, {CLIENTS} concurrent clients, 1 uvicorn worker, load generator: {tool}",
        "",
        "| request | p50 ms | p99 ms | requests/s | errors |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for read in reads:
        path = read.url.split(":", 2)[2].split("/", 1)[1]
        lines.append(
            f"| GET /{path} | {read.p50_ms:.1f} | {read.p99_ms:.1f} "
            f"| {read.rps:,.0f} | {read.errors} |"
        )
    return "\n".join(lines)


STEPS = (
    ("first ingest", "same"),
    ("re-ingest, unchanged", "same"),
    ("re-ingest, 1% changed", "changed"),
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--read-seconds", type=int, default=10)
    parser.add_argument("--load-generator", choices=("auto", "wrk", "httpx"), default="auto")
    args = parser.parse_args()
    url = bench_database()
    migrate_with(PROJECT, url)
    writes: dict[str, dict[str, int]] = {}
    with upstream(args.records) as same, upstream(args.records, changed_every=100) as changed:
        before = first_ingest_before_versions(same, args.records)
        loads = [physical_limit(url, same, args.records)]
        for name, source in STEPS:
            load, writes[name] = ingest_counting_writes(
                name, url, same if source == "same" else changed, args.records
            )
            loads.append(load)
    tool, reads = read_load(url, args.read_seconds, args.load_generator)
    print(report(args.records, loads, tool, reads))
    print(versions_report(before, loads[1], writes))
    print()
    print(status_page(url))


if __name__ == "__main__":
    settings.LOG_LEVEL = "WARNING"
    main()
