"""Prometheus metrics for ingest runs; HTTP metrics come from the instrumentator in main.py."""

from typing import TYPE_CHECKING

import stamina.instrumentation
from prometheus_client import Counter, Gauge, Histogram
from stamina.instrumentation import RetryDetails

from app.logs import is_database_error, log_retry, retry_reason

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
    RUNS.labels(status=str(run.status)).inc()
    RUN_DURATION.observe(duration_seconds)
    PAGES.inc(run.pages_fetched)
    for outcome, field in OUTCOMES.items():
        RECORDS.labels(outcome=outcome).inc(getattr(run, field))
    if run.status == "succeeded" and run.finished_at is not None:
        LAST_SUCCESS.set(run.finished_at.timestamp())


def count_retry(details: RetryDetails) -> None:
    """stamina retry hook: one increment per retried upstream request, by cause."""
    cause = details.caused_by
    if is_database_error(cause):  # a run's record being written while the database is away
        return
    UPSTREAM_RETRIES.labels(reason=retry_reason(cause)).inc()


def install_retry_hooks() -> None:
    """Log every retry (with the run's context) and count it."""
    stamina.instrumentation.set_on_retry_hooks([log_retry, count_retry])
