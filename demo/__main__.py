"""`make demo`: the whole journey, offline.

A local stand-in for the SpaceX API (tests/fake_upstream.py) serves the recorded real snapshot
(tests/fixtures/crew_v4.json); the service runs against it on its own embedded database
(`.data/demo-postgres`, never DATABASE_URL: a run soft-deletes what the snapshot lacks); one
ingest runs; the URLs to open are printed. Ctrl-C stops everything.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from app.embedded_postgres import start_embedded_postgres
from app.problems import Problem, check_port, exit_with
from tests.fake_upstream import FakeUpstream

PROJECT = Path(__file__).resolve().parent.parent
SNAPSHOT = PROJECT / "tests" / "fixtures" / "crew_v4.json"
FINISHED = {"succeeded", "failed", "cancelled"}


def wait_for(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise SystemExit(f"demo: {what} did not happen within {seconds:.0f} s")


def start_service(
    upstream_url: str, host: str, port: int, database: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "SPACEX_API_URL": upstream_url,
        "INGEST_API_TOKEN": "",
        "INGEST_INTERVAL_SECONDS": "0",
        "INGEST_PAGE_SIZE": "5",
        "LOG_FORMAT": "console",  # ServiceLog counts its access lines
    }
    command = [sys.executable, "-m", "app.cli", "serve", "--host", host, "--port", str(port)]
    return subprocess.Popen(command, cwd=PROJECT, env=env, stderr=subprocess.PIPE)


class ServiceLog:
    """Passes the service's log lines on as they come, and counts the requests logged: the
    result block waits for the lines of the requests before it, so none is printed after it."""

    def __init__(self, service: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        assert service.stderr is not None
        self._stream = service.stderr
        threading.Thread(target=self._forward, name="service-log", daemon=True).start()

    def _forward(self) -> None:
        for raw in self._stream:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            sys.stderr.write(line)
            sys.stderr.flush()

    def requests_logged(self, path: str) -> int:
        return sum(f"path={path} " in line for line in list(self.lines))


def ready(service: subprocess.Popen[bytes], base: str) -> bool:
    if service.poll() is not None:
        raise SystemExit(f"demo: the service exited (code {service.returncode}); see above")
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def ingest_once(base: str, service_log: ServiceLog) -> dict[str, Any]:
    run = httpx.post(f"{base}/ingest", timeout=10).raise_for_status().json()
    polls = 0

    def finished() -> dict[str, Any] | None:
        nonlocal polls
        polls += 1
        current = httpx.get(f"{base}/ingest/{run['id']}", timeout=10).json()
        return dict(current) if current["status"] in FINISHED else None

    result = dict(wait_for(finished, 120, f"ingest run {run['id']}"))
    path = f"/ingest/{run['id']}"
    wait_for(lambda: service_log.requests_logged(path) >= polls, 10, "the service's log lines")
    return result


def report(base: str, run: dict[str, Any], database: str) -> str:
    counts = ", ".join(
        f"{run[name]} {name.split('_')[-1]}"
        for name in ("records_fetched", "rows_inserted", "rows_updated", "rows_unchanged")
    )
    return f"""
Ingest run {run["id"]}: {run["status"]} ({counts}){": " + run["error"] if run["error"] else ""}

Open:
  {base}/                      the status page: is the data fresh, how did the runs go
  {base}/docs                  the API, try it out
  {base}/redoc
  {base}/crew?limit=5&sort=name
  {base}/crew?agency=NASA
  {base}/ingest/{run["id"]}                the run above
  {base}/metrics
SQL on this demo's database, from another terminal while the demo runs:
  make psql DATABASE_URL='{database}' SQL="SELECT name, agency FROM crew"
Ctrl-C stops the service and the stand-in upstream.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--data", type=Path, default=PROJECT / ".data" / "demo-postgres")
    parser.add_argument("--exit", action="store_true", help="stop after the ingest (for tests)")
    args = parser.parse_args()
    try:  # before anything starts: the service would fail on it after the database started
        check_port(args.host, args.port, "make demo PORT={port}")
    except Problem as problem:
        exit_with(problem)

    stop_like_ctrl_c_on(signal.SIGTERM, signal.SIGHUP)
    upstream = FakeUpstream(json.loads(SNAPSHOT.read_text())).start()
    print(f"stand-in upstream with the recorded snapshot: {upstream.url}", flush=True)
    # its own embedded database, whatever DATABASE_URL says: a run soft-deletes what it lacks
    database = start_embedded_postgres(args.data).replace("+psycopg2", "")
    service = start_service(upstream.url, args.host, args.port, database)
    service_log = ServiceLog(service)
    base = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    try:
        wait_for(lambda: ready(service, base), 120, "service start")
        print(report(base, ingest_once(base, service_log), database), flush=True)
        if not args.exit:
            service.wait()
    except KeyboardInterrupt:  # the terminal sent SIGINT to the service too
        pass
    finally:
        stop(service)
        upstream.stop()


def stop_like_ctrl_c_on(*signals: signal.Signals) -> None:
    """`kill` or a closed terminal stops the demo as Ctrl-C does: the service first, then the
    embedded PostgreSQL (at exit), instead of leaving the database running. Ctrl-C itself works
    even where the demo was started with SIGINT ignored (from a shell's background job, say)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in signals:
        signal.signal(signum, lambda received, _: sys.exit(128 + received))


def stop(service: subprocess.Popen[bytes]) -> None:
    """SIGINT, as Ctrl-C would: the service stops its embedded PostgreSQL on the way out."""
    try:
        service.wait(timeout=1)
    except subprocess.TimeoutExpired:
        service.send_signal(signal.SIGINT)
        service.wait(timeout=60)


if __name__ == "__main__":
    main()
