"""The one place that creates, runs, cancels and finishes ingest runs.

What a run does is in pipeline.py; the run record's fenced SQL in runs.py; the heartbeat,
deadlines and reaping of abandoned runs in watchdog.py; this process's runs in registry.py.
"""

import time
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, select

from app import db_errors, metrics
from app.config import settings
from app.db import background_engine
from app.ingest import extract, listing, load, registry, runs, validate
from app.ingest.pipeline import ProgressCallback, RunCounts, RunStopped, run_pipeline
from app.ingest.watchdog import watchdog
from app.models import ACTIVE_RUN_STATUSES, IngestRun, RunStatus, RunTrigger
from app.problems import UPSTREAM_HINT

log = structlog.get_logger("crew_etl.ingest")


class RunConflict(Exception):
    def __init__(self, active_run_id: int | None) -> None:
        super().__init__(f"run {active_run_id} is already queued or running")
        self.active_run_id = active_run_id


class RunNotCancellable(Exception):
    pass


# Failures a run expects now and then: logged as one line with a hint, without a traceback.
EXPECTED_FAILURES = (extract.ExtractError, load.MassDeleteRefused, load.TooManyRejects)


LISTING_HINT = (
    "the upstream changed while it was read, or did not page as asked; nothing was deleted, "
    "and the next run reads it again"
)


def hint_for(exc: Exception) -> str | None:
    if isinstance(exc, listing.ListingInconsistent):
        return LISTING_HINT
    return UPSTREAM_HINT if isinstance(exc, extract.ExtractError) else None


def active_run(session: Session) -> IngestRun | None:
    statement = select(IngestRun).where(IngestRun.status.in_(ACTIVE_RUN_STATUSES))  # type: ignore[attr-defined]
    return session.exec(statement).first()


def create_run(
    session: Session,
    trigger: RunTrigger,
    allow_mass_delete: bool = False,
    schedule_slot: int | None = None,
    dry_run: bool = False,
) -> IngestRun:
    """Queue a run; the database refuses a second active run (RunConflict), on any replica.

    A run abandoned by a process that died is ended first, so it cannot block this one.
    """
    runs.reap_stale_quietly()
    values = {
        "trigger": str(trigger),
        "source_url": extract.redacted(extract.crew_query_url(settings.SPACEX_API_URL)),
        "allow_mass_delete": allow_mass_delete,
        "dry_run": dry_run,
        "schedule_slot": schedule_slot,
    }
    for _ in range(3):  # the active run may finish between the refusal and our look-up
        run_id = runs.queue_run(values)
        if run_id is not None:
            run = session.get(IngestRun, run_id)
            assert run is not None
            return detached(session, run)
        active = active_run(session)
        session.rollback()  # no transaction outlives the request, not even on a 409
        if active is not None or schedule_slot is not None:
            raise RunConflict(active.id if active else None)
    raise RunConflict(None)


def detached(session: Session, run: IngestRun) -> IngestRun:
    """The run as stored, loaded and out of the session, whose transaction is then ended: no
    request holds a lock on `ingest_runs` while it, or the run it started, goes on."""
    session.refresh(run)
    session.expunge(run)
    session.commit()
    return run


def cancel_run(session: Session, run_id: int) -> IngestRun | None:
    """Cancel a queued run at once, or ask a running one to stop at its next checkpoint."""
    runs.reap_stale_quietly()
    run = session.get(IngestRun, run_id)
    if run is None:
        return None
    if run.status not in ACTIVE_RUN_STATUSES:
        raise RunNotCancellable(f"run {run_id} already finished with status {run.status}")
    session.execute(
        text(
            "UPDATE ingest_runs SET cancel_requested = true, "
            "status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, "
            "finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END, "
            "error = CASE WHEN status = 'queued' THEN 'cancelled on request' ELSE error END "
            "WHERE id = :id"
        ),
        {"id": run_id},
    )
    session.commit()
    return detached(session, run)


def interrupt_local_runs(reason: str, and_later_ones: bool = False) -> None:
    """Make every run of this process stop, roll back and end `failed` with `reason`; with
    `and_later_ones` also runs that start from now on. Safe in a signal handler: no I/O."""
    registry.stop_all(reason, and_later_ones)


def execute_run(run_id: int, on_progress: ProgressCallback | None = None) -> IngestRun | None:
    """Run extract -> validate -> load for a queued run and record how it ended."""
    with structlog.contextvars.bound_contextvars(run_id=run_id):
        if not runs.mark_running(run_id):
            log.info("run not started: it is no longer queued here")
            return None
        watchdog.start()
        local = registry.register(run_id, settings.INGEST_RUN_TIMEOUT_SECONDS)
        started = time.monotonic()
        try:
            run_and_record(local, on_progress or (lambda _: None))
        finally:
            registry.unregister(run_id)
        run = get_run(run_id)
        metrics.observe_finished_run(run, time.monotonic() - started)
        log.info(
            "run finished", duration_seconds=round(time.monotonic() - started, 3), **summary(run)
        )
        return run


def run_and_record(local: registry.LocalRun, on_progress: ProgressCallback) -> None:
    """Run the pipeline; whatever stops it, record the end truthfully, or leave the record to
    the process that already ended the run."""
    counts, drift = RunCounts(), validate.SchemaDrift()
    source_url = None
    try:
        run = get_run(local.run_id)
        source_url = run.source_url
        log.info("run started", trigger=run.trigger, source_url=source_url)
        run_pipeline(local, run, counts, drift, on_progress)
    except runs.RunLost as lost:
        log.warning("run ended elsewhere; everything it loaded was rolled back", reason=str(lost))
    except RunStopped as stop:
        finish_unsuccessful(local.run_id, stop.status, str(stop), counts, drift)
    except EXPECTED_FAILURES as exc:  # one line: the cause, page, URL and what to do
        log.error("run failed", error=str(exc), url=source_url, hint=hint_for(exc))
        finish_unsuccessful(local.run_id, RunStatus.failed, str(exc), counts, drift)
    except Exception as exc:  # every failure ends the run truthfully
        if local.stop_reason is not None:  # its statement was cancelled because it had to stop
            log.warning("run stopped", reason=local.stop_reason, error=type(exc).__name__)
            status = RunStatus(local.stop_status)
            finish_unsuccessful(local.run_id, status, local.stop_reason, counts, drift)
            return
        log.exception("run failed")
        finish_unsuccessful(local.run_id, RunStatus.failed, public_error(exc), counts, drift)


def finish_unsuccessful(
    run_id: int, status: RunStatus, error: str, counts: RunCounts, drift: validate.SchemaDrift
) -> None:
    """Record a failed or cancelled run: its progress counts, no rows written, and why."""
    values = {
        "drift": load.jsonb_text(drift.as_json()),
        "pages": counts.pages_fetched,
        "fetched": counts.records_fetched,
        "valid": counts.records_valid,
        "rejected": counts.records_rejected,
    }
    runs.finish_unsuccessful(run_id, str(status), error, values)


# SQLSTATE classes of a server that went away: 08 connection exception, 57P operator
# intervention (shutdown, terminated backend).
CONNECTION_LOST = ("08", "57P")


def public_error(exc: Exception) -> str:
    """The short cause an unexpected failure shows on the API; SQL and driver text only go to
    the log."""
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    if not type(original).__module__.startswith("psycopg2"):
        return f"internal error ({type(exc).__name__}); details in the log"
    code = getattr(original, "pgcode", None)
    if code == db_errors.READ_ONLY:  # a failover to a standby, or the primary made read-only
        return db_errors.describe(exc)
    cause = f"{type(original).__name__}, SQLSTATE {code}" if code else type(original).__name__
    if code is None or code.startswith(CONNECTION_LOST):  # no answer, or the server went away
        return f"database connection lost while loading ({cause}); details in the log"
    return f"database error while loading ({cause}); details in the log"


def get_run(run_id: int) -> IngestRun:
    with Session(background_engine()) as session:
        run = session.get(IngestRun, run_id)
        if run is None:
            raise LookupError(f"run {run_id} does not exist")
        return run


def summary(run: IngestRun) -> dict[str, Any]:
    fields = ("status", "trigger", "error", *RunCounts.__dataclass_fields__)
    return {name: getattr(run, name) for name in fields}


def wait_for_local_runs(timeout_seconds: float) -> None:
    registry.wait_until_idle(timeout_seconds)
