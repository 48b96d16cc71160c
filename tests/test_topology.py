"""The service in a production topology, every part a real process on free ports: a PostgreSQL
15 primary, a streaming standby (pg_basebackup -R, hot standby), PgBouncer in transaction mode
in front of the primary (tests/topology_harness.py), and two services through PgBouncer: `a`
with two worker processes, `b` reading crew from the standby. Then a read-only failover mid-run
and a promotion of the standby, which must end runs truthfully and heal. Healing times are
printed (`-s`) for docs/explanation/topology.md.
"""

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, free_port, synthetic_crew
from tests.pg_harness import wait_for
from tests.test_processes import PROJECT
from tests.topology_harness import Topology, available

pytestmark = [
    pytest.mark.skipif(available() is not None, reason=str(available())),
    pytest.mark.timeout(900),  # services start slowly on a busy machine; every wait is bounded
]

STALE_AFTER_SECONDS = 4
RUNS_SUCCEEDED = re.compile(r'^crew_etl_ingest_runs_total\{status="succeeded"\} (\S+)$', re.M)


class Service:
    """`crew-etl serve` in a process group of its own (its workers go with it)."""

    def __init__(self, upstream: FakeUpstream, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "SPACEX_API_URL": upstream.url,
            "INGEST_PAGE_SIZE": "2",
            "INGEST_STALE_AFTER_SECONDS": str(STALE_AFTER_SECONDS),
            "LOG_FORMAT": "json",
            **env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)],
            cwd=PROJECT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(self.ready, timeout=240)

    def ready(self) -> bool:
        assert self.process.poll() is None, "service exited"
        return self.get("/readyz").status_code == 200

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=10, **kwargs)

    def post(self, path: str) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    built = Topology()
    yield built
    built.destroy()


@pytest.fixture(scope="module")
def module_upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream([synthetic_crew(index) for index in range(20)]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def services(topology: Topology, module_upstream: FakeUpstream) -> Iterator[dict[str, Service]]:
    through_pooler = {"DATABASE_URL": topology.bouncer.url()}
    started: dict[str, Service] = {}
    try:
        started["a"] = Service(module_upstream, WORKERS="2", **through_pooler)
        started["b"] = Service(
            module_upstream,
            DATABASE_READ_URL=topology.standby.url(),
            READ_MAX_LAG_SECONDS="3600",
            **through_pooler,
        )
        yield started
    finally:
        for service in started.values():
            service.stop()


def run_status(topology: Topology, run_id: int) -> tuple[Any, ...]:
    return topology.primary.one("SELECT status, error FROM ingest_runs WHERE id = %s", run_id)


def trigger_and_finish(topology: Topology, service: Service, path: str = "/ingest") -> int:
    response = service.post(path)
    assert response.status_code == 202, response.text
    run_id = int(response.json()["id"])
    wait_for(lambda: run_status(topology, run_id)[0] not in ("queued", "running"))
    assert run_status(topology, run_id) == ("succeeded", None)
    return run_id


def replica_caught_up(topology: Topology) -> bool:
    query = "SELECT md5(coalesce(string_agg(c::text, '|' ORDER BY id), '')) FROM crew c"
    return topology.standby.one(query) == topology.primary.one(query)


def report(case: str, seconds: float) -> None:
    print(f"\nhealed: {case}: {seconds:.1f} s")


def test_a_run_through_the_pooler_is_read_back_from_the_replica_with_honest_validators(
    topology: Topology, services: dict[str, Service], module_upstream: FakeUpstream
) -> None:
    a, b = services["a"], services["b"]
    trigger_and_finish(topology, b, "/ingest?dry_run=true")  # through the pooler too
    assert b.get("/crew").json()["total"] == 0
    trigger_and_finish(topology, a)
    wait_for(lambda: replica_caught_up(topology))
    wait_for(lambda: b.get("/readyz").json()["replica"]["serving_reads"])
    assert b.get("/crew").json() == a.get("/crew").json()
    before = b.get("/crew").headers["etag"]

    topology.standby.one("SELECT pg_wal_replay_pause()")
    try:
        module_upstream.records = [{**r, "agency": "ESA"} for r in module_upstream.records]
        trigger_and_finish(topology, a)
        from_primary, from_replica = a.get("/crew"), b.get("/crew")
        assert from_primary.headers["etag"] != before
        # the replica's state, with the replica's validators: never the newer state's ETag
        assert from_replica.headers["etag"] == before
        assert {m["agency"] for m in from_replica.json()["items"]} != {"ESA"}
        revalidated = b.get("/crew", headers={"If-None-Match": from_primary.headers["etag"]})
        assert revalidated.status_code == 200 and revalidated.headers["etag"] == before
        wait_for(lambda: b.get("/readyz").json()["replica"]["lag_seconds"] > 0)  # next check
        assert b.get("/readyz").json()["replica"]["serving_reads"]  # within 3600 s
        assert "crew_etl_replica_lag_seconds" in b.get("/metrics").text

        strict = Service(
            module_upstream,
            DATABASE_URL=topology.bouncer.url(),
            DATABASE_READ_URL=topology.standby.url(),
            READ_MAX_LAG_SECONDS="0.5",
        )
        try:  # lagging more than READ_MAX_LAG_SECONDS: reads fall back to the primary
            wait_for(lambda: not strict.get("/readyz").json()["replica"]["serving_reads"])
            assert (
                "more than READ_MAX_LAG_SECONDS"
                in strict.get("/readyz").json()["replica"]["problem"]
            )
            assert strict.get("/crew").headers["etag"] == from_primary.headers["etag"]
            assert "crew_etl_replica_serving_reads 0.0" in strict.get("/metrics").text
        finally:
            strict.stop()
    finally:
        topology.standby.one("SELECT pg_wal_replay_resume()")
    wait_for(lambda: b.get("/crew").headers["etag"] == a.get("/crew").headers["etag"])


def test_twenty_triggers_across_both_services_start_exactly_one_run(
    topology: Topology, services: dict[str, Service], module_upstream: FakeUpstream
) -> None:
    a, b = services["a"], services["b"]
    module_upstream.page_delay_seconds = 0.2
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            responses = list(pool.map(lambda i: (a, b)[i % 2].post("/ingest"), range(20)))
    finally:
        module_upstream.page_delay_seconds = 0
    codes = sorted(response.status_code for response in responses)
    assert codes == [202] + [409] * 19
    run_id = next(int(r.json()["id"]) for r in responses if r.status_code == 202)
    wait_for(lambda: run_status(topology, run_id)[0] == "succeeded")


def worker_pids(service: Service) -> set[int]:
    """The service's worker processes (not multiprocessing's resource tracker)."""
    children = subprocess.run(
        ["pgrep", "-P", str(service.process.pid)], capture_output=True, text=True, check=False
    )
    return {
        int(pid)
        for pid in children.stdout.split()
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    }


def succeeded_runs_scraped(service: Service) -> float:
    match = RUNS_SUCCEEDED.search(service.get("/metrics").text)
    return float(match.group(1)) if match else 0.0


def test_metrics_add_up_across_workers_and_survive_a_worker_restart(
    topology: Topology, services: dict[str, Service]
) -> None:
    a = services["a"]
    before = {succeeded_runs_scraped(a) for _ in range(6)}
    assert len(before) == 1  # whichever worker answers, the same sum
    owners: set[int] = set()
    runs = 0
    while len(owners) < 2:  # until both workers have finished a run
        assert runs < 20, "every run went to one worker"
        run_id = trigger_and_finish(topology, a)
        owners.add(
            int(topology.primary.one("SELECT owner_id FROM ingest_runs WHERE id = %s", run_id)[0])
        )
        runs += 1
    assert {succeeded_runs_scraped(a) for _ in range(6)} == {before.pop() + runs}

    workers = worker_pids(a)
    total = succeeded_runs_scraped(a)
    os.kill(max(workers), signal.SIGKILL)  # uvicorn starts another in its place
    wait_for(lambda: len(worker_pids(a) - workers) == 1 and a.ready(), timeout=240)
    assert {succeeded_runs_scraped(a) for _ in range(6)} == {total}


def start_slow_run(topology: Topology, service: Service, upstream: FakeUpstream) -> int:
    upstream.records = [{**r, "status": "retired"} for r in upstream.records] + [
        synthetic_crew(index) for index in range(100, 160)
    ]
    upstream.page_delay_seconds = 1.0
    response = service.post("/ingest")
    assert response.status_code == 202, response.text
    run_id = int(response.json()["id"])
    pages = "SELECT pages_fetched FROM ingest_runs WHERE id = %s"
    wait_for(lambda: topology.primary.one(pages, run_id)[0] >= 2)
    return run_id


def crew_checksum(topology: Topology) -> Any:
    return topology.primary.one(
        "SELECT md5(coalesce(string_agg(c::text, '|' ORDER BY id), '')) FROM crew c"
    )


def test_a_read_only_failover_mid_run_ends_the_run_truthfully_and_heals(
    topology: Topology, services: dict[str, Service], module_upstream: FakeUpstream
) -> None:
    a, b = services["a"], services["b"]
    before = crew_checksum(topology)
    run_id = start_slow_run(topology, a, module_upstream)

    topology.primary.set_read_only(True)
    try:
        with httpx.Client(base_url=b.url, timeout=10) as client:
            refused = client.post("/ingest")
            after = client.get("/healthz")  # on the same kept-alive connection
        assert refused.status_code == 503, refused.text
        assert refused.json()["cause"] == "ReadOnlySqlTransaction"
        assert refused.headers["retry-after"] and refused.headers.get("connection") != "close"
        assert after.status_code == 200
        for service in (a, b):
            ready = service.get("/readyz")
            assert ready.status_code == 503 and not ready.json()["checks"]["writable"]
            assert any("read-only" in problem for problem in ready.json()["problems"])
        # held until the run's last heartbeat is older than the stale window: it would be
        # ended as abandoned if silence alone decided
        silent = (
            "SELECT heartbeat_at < clock_timestamp() - make_interval(secs => %s) "
            "FROM ingest_runs WHERE id = %s"
        )
        wait_for(lambda: topology.primary.one(silent, STALE_AFTER_SECONDS + 2, run_id)[0])
    finally:
        topology.primary.set_read_only(False)
    writable = time.monotonic()

    wait_for(lambda: run_status(topology, run_id)[0] != "running")
    report(
        "read-only primary mid-run: run recorded after writes came back",
        time.monotonic() - writable,
    )
    assert run_status(topology, run_id) == (
        "failed",
        "database is read-only (ReadOnlySqlTransaction)",
    )
    assert crew_checksum(topology) == before
    wait_for(lambda: a.ready() and b.ready())
    report("read-only primary: both services ready again", time.monotonic() - writable)
    module_upstream.page_delay_seconds = 0
    trigger_and_finish(topology, b)  # the next trigger runs


def test_a_promoted_standby_behind_a_repointed_pgbouncer_heals(
    topology: Topology, services: dict[str, Service], module_upstream: FakeUpstream
) -> None:
    a, b = services["a"], services["b"]
    run_id = start_slow_run(topology, a, module_upstream)
    wait_for(lambda: replica_caught_up(topology))

    topology.primary.stop("immediate")  # the primary is lost
    down = time.monotonic()
    ready = b.get("/readyz")
    assert ready.status_code == 503
    refused = b.post("/ingest")
    assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
    topology.standby.promote()
    topology.bouncer.repoint(topology.standby)
    repointed = time.monotonic()

    def run_on_new_primary() -> Any:
        return topology.standby.one("SELECT status, error FROM ingest_runs WHERE id = %s", run_id)

    wait_for(lambda: run_on_new_primary()[0] != "running", timeout=120)
    report(
        "primary lost, standby promoted, PgBouncer RELOADed: run recorded",
        time.monotonic() - repointed,
    )
    status, error = run_on_new_primary()
    assert status == "failed" and error.startswith("database connection lost while loading"), error
    wait_for(lambda: a.ready() and b.ready(), timeout=120)
    report("promotion: both services ready again", time.monotonic() - repointed)
    module_upstream.page_delay_seconds = 0
    response = b.post("/ingest")
    assert response.status_code == 202, response.text
    new_run = int(response.json()["id"])
    status_of = "SELECT status FROM ingest_runs WHERE id = %s"
    wait_for(lambda: topology.standby.one(status_of, new_run)[0] == "succeeded")
    report("promotion: from losing the primary to the next run succeeded", time.monotonic() - down)
