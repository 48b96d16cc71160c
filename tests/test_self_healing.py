"""Operational faults heal without a restart: real server processes on a PostgreSQL server of the
test's own (tests/pg_harness.py), which the tests stop, restart and lock.

The invariant each test checks: a run always ends within a bounded time after its process can
no longer finish it; at most one run loads at a time; a run's record never contradicts what
happened to the data (the crew checksum is the old snapshot or the complete new one); a
transient outage heals without a restart. Each test prints how long healing took (`-s`).
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg2
import pytest
from sqlalchemy.engine import make_url

from tests.fake_upstream import FakeUpstream, synthetic_crew
from tests.pg_harness import OwnPostgres, wait_for
from tests.test_processes import PROJECT, UVICORN, Server

STALE_AFTER_SECONDS = 4


@pytest.fixture(scope="module")
def own_pg() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    yield server
    server.destroy()


class Database:
    """Plain reads and writes on the test's database, a connection each (it may restart)."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.dsn = {
            "host": parsed.host,
            "port": parsed.port,
            "user": parsed.username,
            "dbname": parsed.database,
            "connect_timeout": 5,
        }

    def one(self, sql: str, *params: Any) -> Any:
        connection = psycopg2.connect(**self.dsn)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchone() if cursor.description else None
        finally:
            connection.close()

    def run(self, run_id: int) -> tuple[str, str | None]:
        return self.one("SELECT status, error FROM ingest_runs WHERE id = %s", run_id)

    def status(self, run_id: int) -> str:
        return str(self.run(run_id)[0])

    def checksum(self) -> str:
        return str(
            self.one("SELECT md5(coalesce(string_agg(c::text, '|' ORDER BY id), '')) FROM crew c")[
                0
            ]
        )


@pytest.fixture(name="db")
def db_fixture(own_pg: OwnPostgres) -> Database:
    try:
        own_pg.start()  # a test that failed half-way may have left it stopped
    except subprocess.CalledProcessError:
        pass  # already running
    return Database(own_pg.create_database("crew_etl_faults"))


@pytest.fixture(name="start")
def start_fixture(upstream: FakeUpstream, db: Database) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(**env: str) -> Server:
        settings = {"DATABASE_URL": db.url, "INGEST_STALE_AFTER_SECONDS": str(STALE_AFTER_SECONDS)}
        started.append(Server(UVICORN, upstream.url, **{**settings, **env}))
        return started[-1]

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)  # a paused one cannot die otherwise
        server.stop()


def report(case: str, seconds: float) -> None:
    print(f"\nhealed: {case}: {seconds:.1f} s")


def load_snapshot(server: Server, db: Database) -> str:
    run_id = server.post("/ingest").json()["id"]
    wait_for(lambda: db.status(run_id) == "succeeded")
    return db.checksum()


def start_slow_run(server: Server, upstream: FakeUpstream, db: Database) -> int:
    """A run that changes every row, one page a second, caught after it loaded two pages."""
    upstream.records = [{**r, "status": "retired"} for r in upstream.records]
    upstream.page_delay_seconds = 1.0
    response = server.post("/ingest")
    assert response.status_code == 202, response.text
    run_id = int(response.json()["id"])
    wait_for(lambda: db.one("SELECT pages_fetched FROM ingest_runs WHERE id = %s", run_id)[0] >= 2)
    return run_id


def finish_quickly(upstream: FakeUpstream, change: str) -> None:
    upstream.page_delay_seconds = 0
    upstream.records = [{**r, "agency": change} for r in upstream.records]


def test_database_outage_mid_run_ends_the_run_truthfully_and_heals(
    start: Callable[..., Server], upstream: FakeUpstream, db: Database, own_pg: OwnPostgres
) -> None:
    server = start()
    before = load_snapshot(server, db)
    run_id = start_slow_run(server, upstream, db)

    own_pg.stop("fast")
    started = time.monotonic()
    crew = httpx.get(f"{server.url}/crew", timeout=10)
    health = httpx.get(f"{server.url}/healthz", timeout=10)
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert time.monotonic() - started < 10
    assert crew.status_code == 503, crew.text
    assert crew.headers["retry-after"] and "database" in crew.json()["detail"]
    assert health.status_code == 200
    assert ready.status_code == 503 and not ready.json()["checks"]["database"]
    time.sleep(2)
    own_pg.start()

    healed = wait_for(lambda: db.status(run_id) != "running")
    status, error = db.run(run_id)
    assert status == "failed"
    assert error and error.startswith("database connection lost while loading"), error
    assert db.checksum() == before
    finish_quickly(upstream, "ESA")
    assert load_snapshot(server, db) != before
    report("database stopped for 2 s mid-run: run ended after the restart", healed)


def test_two_replicas_database_restart_then_a_trigger_on_each(
    start: Callable[..., Server], upstream: FakeUpstream, db: Database, own_pg: OwnPostgres
) -> None:
    first, second = start(), start()
    before = load_snapshot(first, db)
    interrupted = start_slow_run(first, upstream, db)

    own_pg.stop("fast")
    time.sleep(3)
    own_pg.start()
    healed = wait_for(lambda: db.status(interrupted) != "running")
    assert db.run(interrupted)[0] == "failed"
    assert db.checksum() == before

    # 100 pages, slow until the third replica has started, so the run is still loading then
    upstream.records += [synthetic_crew(index) for index in range(182)]
    upstream.page_delay_seconds = 1.5
    with ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(pool.map(lambda replica: replica.post("/ingest"), [first, second]))
    assert sorted(r.status_code for r in responses) == [202, 409]
    run_id = next(r.json()["id"] for r in responses if r.status_code == 202)
    third = start()  # a replica starting now must leave the live run alone
    assert db.status(run_id) == "running"
    assert third.post("/ingest").status_code == 409
    upstream.page_delay_seconds = 0
    wait_for(lambda: db.status(run_id) != "running")
    assert db.run(run_id) == ("succeeded", None)
    assert db.checksum() != before
    overlapping = db.one(
        "SELECT count(*) FROM ingest_runs a JOIN ingest_runs b ON a.id < b.id "
        "AND tstzrange(a.started_at, a.finished_at) && tstzrange(b.started_at, b.finished_at)"
    )[0]
    assert overlapping == 0  # never two runs loading at once
    report("two replicas, database restarted mid-run", healed)


def test_a_killed_process_run_is_ended_when_a_process_starts_two_minutes_later(
    start: Callable[..., Server], upstream: FakeUpstream, db: Database
) -> None:
    first = start()
    before = load_snapshot(first, db)
    run_id = start_slow_run(first, upstream, db)
    first.process.kill()
    first.process.wait(timeout=10)
    assert db.status(run_id) == "running"  # nobody is left to notice
    # two minutes pass, on the database's clock (the one heartbeats are judged by)
    db.one(
        "UPDATE ingest_runs SET heartbeat_at = heartbeat_at - interval '2 minutes', "
        "created_at = created_at - interval '2 minutes', "
        "started_at = started_at - interval '2 minutes' WHERE id = %s",
        run_id,
    )

    started = time.monotonic()
    second = start()
    assert time.monotonic() - started < 60
    status, error = db.run(run_id)
    assert status == "failed" and error and error.startswith("abandoned: no heartbeat since ")
    assert db.checksum() == before
    finish_quickly(upstream, "JAXA")
    assert load_snapshot(second, db) != before
    report("process killed, next start two minutes later", time.monotonic() - started)


def test_a_paused_process_is_reaped_and_cannot_commit_later(
    start: Callable[..., Server], upstream: FakeUpstream, db: Database
) -> None:
    paused = start()
    load_snapshot(paused, db)
    run_id = start_slow_run(paused, upstream, db)
    paused.process.send_signal(signal.SIGSTOP)  # alive, holding its transaction, silent
    paused_at = time.monotonic()

    other = start()
    wait_for(lambda: db.status(run_id) != "running", timeout=60)
    healed = time.monotonic() - paused_at
    status, error = db.run(run_id)
    assert status == "failed" and error and error.startswith("abandoned: no heartbeat since ")
    finish_quickly(upstream, "CSA")
    after = load_snapshot(other, db)  # not blocked by the paused run's row locks

    paused.process.send_signal(signal.SIGCONT)
    time.sleep(STALE_AFTER_SECONDS)  # it wakes up, finds its run gone and must not commit
    assert db.run(run_id) == (status, error)
    assert db.checksum() == after
    assert paused.ready() and httpx.get(f"{paused.url}/healthz").status_code == 200
    report("process paused mid-run: run ended, counted from the pause", healed)


def test_a_run_holds_no_lock_on_ingest_runs_so_a_migration_can_alter_it(
    start: Callable[..., Server], upstream: FakeUpstream, db: Database
) -> None:
    server = start()
    finished = server.post("/ingest").json()["id"]
    wait_for(lambda: db.status(finished) == "succeeded")
    run_id = start_slow_run(server, upstream, db)
    # requests that read runs and answer an error must not leave a transaction behind either
    assert server.post("/ingest").status_code == 409
    assert server.post(f"/ingest/{finished}/cancel").status_code == 409
    assert httpx.get(f"{server.url}/ingest").status_code == 200

    started = time.monotonic()
    db.one(
        "SET lock_timeout = '2s'; ALTER TABLE ingest_runs ADD COLUMN probe integer; "
        "ALTER TABLE ingest_runs DROP COLUMN probe"
    )
    altered = time.monotonic() - started
    assert server.post("/ingest").status_code == 409  # the run goes on
    assert httpx.get(f"{server.url}/ingest/{run_id}").json()["status"] == "running"
    upstream.page_delay_seconds = 0
    wait_for(lambda: db.status(run_id) != "running")
    assert db.status(run_id) == "succeeded"
    print(f"\nALTER TABLE ingest_runs during a run: {altered:.2f} s")


def test_the_scheduler_survives_a_database_outage(
    start: Callable[..., Server], db: Database, own_pg: OwnPostgres
) -> None:
    server = start(INGEST_INTERVAL_SECONDS="1")
    wait_for(lambda: db.one("SELECT count(*) FROM ingest_runs WHERE status = 'succeeded'")[0])

    own_pg.stop("fast")
    stopped = time.monotonic()

    def tick_missed() -> bool:  # said once more than three intervals pass without a tick
        ready = httpx.get(f"{server.url}/readyz", timeout=5)
        problems = ready.json()["problems"]
        return ready.status_code == 503 and any(
            "no scheduler tick got through" in p for p in problems
        )

    wait_for(tick_missed, timeout=30)
    assert time.monotonic() - stopped > 2  # three intervals after the last tick, not sooner
    own_pg.start()
    restarted = db.one("SELECT clock_timestamp()")[0]

    def scheduled_run_after_restart() -> bool:
        query = "SELECT count(*) FROM ingest_runs WHERE status = 'succeeded' AND started_at > %s"
        return bool(db.one(query, restarted)[0])

    healed = wait_for(scheduled_run_after_restart)
    wait_for(server.ready, timeout=10)
    report("scheduler, database stopped until a missed tick was reported", healed)


def test_a_locked_database_starves_neither_health_checks_nor_metrics(
    start: Callable[..., Server], upstream: FakeUpstream, db: Database
) -> None:
    server = start(DB_STATEMENT_TIMEOUT_SECONDS="6")
    load_snapshot(server, db)
    member = db.one("SELECT id FROM crew LIMIT 1")[0]
    locked = threading.Event()

    def hold_lock() -> None:
        connection = psycopg2.connect(**db.dsn)
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE crew, crew_versions IN ACCESS EXCLUSIVE MODE")
            locked.set()
            time.sleep(10)
        connection.rollback()
        connection.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    locked.wait(10)
    with ThreadPoolExecutor(max_workers=100) as pool:
        # reads of the list (8 threads of their own), and of histories (the 40 of the pool)
        urls = [f"{server.url}/crew"] * 60 + [f"{server.url}/crew/{member}/history"] * 40
        reads = [pool.submit(httpx.get, url, timeout=30) for url in urls]
        time.sleep(1)  # every worker thread now waits on the lock
        paths = ("/healthz", "/readyz", "/metrics") * 3
        samples = [(path, *timed_get(f"{server.url}{path}")) for path in paths]
        answers = [read.result() for read in reads]
    holder.join()

    print(f"\nwhile crew was locked (path, status, seconds): {samples}")
    assert all(status == 200 for _, status, _ in samples)
    # Taken while the 40 worker threads wait out their 6 s statement timeouts: an endpoint that
    # needed one of them would take seconds every time.
    for path in ("/healthz", "/readyz", "/metrics"):
        seconds = sorted(took for each, _, took in samples if each == path)
        assert seconds[1] < 1.0, (path, seconds)
    assert {answer.status_code for answer in answers} <= {200, 503}
    unavailable = [answer for answer in answers if answer.status_code == 503]
    assert unavailable, "the statement timeout never fired"
    assert all(a.headers["retry-after"] and a.json()["detail"] for a in unavailable)
    assert httpx.get(f"{server.url}/crew", timeout=10).status_code == 200


def timed_get(url: str) -> tuple[int, float]:
    started = time.monotonic()
    response = httpx.get(url, timeout=30)
    return response.status_code, round(time.monotonic() - started, 3)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_the_cli_rolls_back_on_a_signal_and_ends_the_run_interrupted(
    start: Callable[..., Server], upstream: FakeUpstream, db: Database, signum: int, code: int
) -> None:
    server = start()
    before = load_snapshot(server, db)
    upstream.records = [{**r, "status": "retired"} for r in upstream.records]
    upstream.page_delay_seconds = 1.0
    env = {"DATABASE_URL": db.url, "SPACEX_API_URL": upstream.url, "INGEST_PAGE_SIZE": "2"}
    cli = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "ingest"],
        cwd=PROJECT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    run_id = wait_for_cli_run(db)
    cli.send_signal(signum)
    output = cli.communicate(timeout=30)[0].decode()

    assert cli.returncode == code, output
    name = signal.Signals(signum).name
    assert db.run(run_id) == ("failed", f"interrupted: received {name}")
    assert db.checksum() == before
    upstream.page_delay_seconds = 0
    assert server.post("/ingest").status_code == 202  # nothing left blocking the next run


def wait_for_cli_run(db: Database) -> int:
    query = "SELECT id FROM ingest_runs WHERE trigger = 'cli' AND pages_fetched >= 2"
    wait_for(lambda: db.one(query) is not None)
    return int(db.one(query)[0])
