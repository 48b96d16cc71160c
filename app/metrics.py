"""Prometheus metrics for ingest runs and the read replica; HTTP metrics come from the
instrumentator in main.py.

With several worker processes (WORKERS > 1), every worker writes its metrics to files in
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode) and a scrape of any worker adds
them all up: counters of a worker that exited or was restarted stay counted. `serve` sets the
directory up, empty, before the workers start. Each Gauge says how its workers' values combine.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import stamina.instrumentation
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from stamina.instrumentation import RetryDetails

from app.db_errors import is_database_error
from app.logs import log_retry, retry_reason

if TYPE_CHECKING:
    from app.models import IngestRun

RUNS = Counter("crew_etl_ingest_runs_total", "Finished ingest runs by final status", ["status"])
RECORDS = Counter(
    "crew_etl_ingest_records_total",
    "Records handled by ingest runs, by outcome",
    ["outcome"],
)
PAGES = Counter("crew_etl_ingest_pages_fetched_total", "Upstream pages fetched")
RUN_DURATION = Histogram(
    "crew_etl_ingest_run_duration_seconds",
    "Wall time of finished ingest runs",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
LAST_SUCCESS = Gauge(
    "crew_etl_ingest_last_success_timestamp_seconds",
    "Unix time at which the last successful ingest run finished",
    multiprocess_mode="max",  # the newest any worker saw, exited ones included
)
REPLICA_LAG = Gauge(
    "crew_etl_replica_lag_seconds",
    "How far the read replica (DATABASE_READ_URL) is behind the primary, last measured",
    multiprocess_mode="livemax",
)
REPLICA_SERVING = Gauge(
    "crew_etl_replica_serving_reads",
    "1 while crew reads go to the read replica, 0 while they fall back to the primary",
    multiprocess_mode="livemin",  # 0 if any live worker has fallen back
)
DRY_RUNS = Counter(
    "crew_etl_ingest_dry_runs_total",
    "Finished dry runs by final status; they load nothing, so they move no other run metric",
    ["status"],
)
# Read from the database by every process (app/notify/freshness.py), so the newest value is
# the truth whichever process wrote it.
CONSECUTIVE_FAILURES = Gauge(
    "crew_etl_ingest_consecutive_failures",
    "Runs (dry runs aside) that failed since the last successful one",
    multiprocess_mode="mostrecent",
)
STALE_AFTER = Gauge(
    "crew_etl_stale_after_seconds",
    "The stale window: no successful run for this long makes the data stale",
    multiprocess_mode="max",
)
SCHEDULE_PAUSED = Gauge(
    "crew_etl_schedule_paused",
    "1 while the schedule is paused (POST /schedule/pause), else 0",
    multiprocess_mode="mostrecent",
)
# Per process: the scheduler of each process ticks on its own.
SCHEDULER_INTERVAL = Gauge(
    "crew_etl_scheduler_interval_seconds",
    "INGEST_INTERVAL_SECONDS; 0 when no schedule is configured",
    multiprocess_mode="max",
)
SCHEDULER_LAST_TICK = Gauge(
    "crew_etl_scheduler_last_tick_timestamp_seconds",
    "Unix time of the scheduler's last tick that got through (or of its start)",
    multiprocess_mode="max",
)
UPSTREAM_RETRIES = Counter(
    "crew_etl_upstream_retries_total", "Retried upstream requests", ["reason"]
)

OUTCOMES = {
    "inserted": "rows_inserted",
    "updated": "rows_updated",
    "unchanged": "rows_unchanged",
    "deleted": "rows_deleted",
    "rejected": "records_rejected",
}


def observe_finished_run(run: "IngestRun", duration_seconds: float) -> None:
    if run.dry_run:  # loaded nothing: counted apart, the freshness and row counts stay true
        DRY_RUNS.labels(status=str(run.status)).inc()
        return
    RUNS.labels(status=str(run.status)).inc()
    RUN_DURATION.observe(duration_seconds)
    PAGES.inc(run.pages_fetched)
    for outcome, field in OUTCOMES.items():
        RECORDS.labels(outcome=outcome).inc(getattr(run, field))
    if run.status == "succeeded" and run.finished_at is not None:
        LAST_SUCCESS.set(run.finished_at.timestamp())


def start_series() -> None:
    """Every labelled series at 0 from the start, so rules and dashboards find them before
    their first increment."""
    for status in ("succeeded", "failed", "cancelled"):
        RUNS.labels(status=status)
        DRY_RUNS.labels(status=status)
    for outcome in OUTCOMES:
        RECORDS.labels(outcome=outcome)


start_series()


def count_retry(details: RetryDetails) -> None:
    """stamina retry hook: one increment per retried upstream request, by cause."""
    cause = details.caused_by
    if is_database_error(cause):  # a run's record being written while the database is away
        return
    UPSTREAM_RETRIES.labels(reason=retry_reason(cause)).inc()


def install_retry_hooks() -> None:
    """Log every retry (with the run's context) and count it."""
    stamina.instrumentation.set_on_retry_hooks([log_retry, count_retry])


def observe_replica(lag_seconds: float | None, serving: bool) -> None:
    if lag_seconds is not None:
        REPLICA_LAG.set(lag_seconds)
    REPLICA_SERVING.set(1 if serving else 0)


MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(workers: int) -> Path | None:
    """Before the workers start: with more than one, an empty PROMETHEUS_MULTIPROC_DIR (the one
    given, emptied: it holds the previous run's files; or a new temporary one), set in the
    environment the workers inherit. Counters then add up over every worker of this start."""
    if workers <= 1:
        return None
    given = os.environ.get(MULTIPROC_VARIABLE)
    directory = Path(given) if given else Path(tempfile.mkdtemp(prefix="crew-etl-metrics-"))
    if given:
        shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_VARIABLE] = str(directory)
    return directory


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_VARIABLE) or None


def scrape_registry() -> CollectorRegistry:
    """Every worker's metrics in multiprocess mode, else this process's."""
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def forget_dead_workers() -> None:
    """Drop the live-only gauges of workers that are gone (an exit without clean-up: a crash,
    SIGKILL); their counters stay counted."""
    directory = multiprocess_dir()
    if directory is None:
        return
    pids = {
        int(name.rsplit("_", 1)[1].removesuffix(".db"))
        for name in os.listdir(directory)
        if name.startswith("gauge_live")
    }
    for pid in pids:
        if not process_exists(pid):
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process is there
    except ProcessLookupError:
        return False
    except PermissionError:  # there, but another user's
        return True
    return True


def worker_exits() -> None:
    """A worker's shutdown: its live-only gauges leave the sum."""
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]
