"""The one place that creates, runs, cancels and finishes ingest runs."""

import queue
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, select

from app import metrics
from app.config import settings
from app.db import get_engine
from app.ingest import changes, extract, load, validate
from app.ingest.ownership import lease
from app.ingest.prefetch import Prefetcher
from app.models import ACTIVE_RUN_STATUSES, IngestRun, RunStatus, RunTrigger

log = structlog.get_logger("crew_etl.ingest")

POLL_SECONDS = 0.5  # how often a run waiting on the upstream checks for cancellation
CHANGES_SPOOL_BYTES = 8 * 1024 * 1024  # a dry run's change list beyond this waits on disk


class RunConflict(Exception):
    def __init__(self, active_run_id: int | None) -> None:
        super().__init__(f"run {active_run_id} is already queued or running")
        self.active_run_id = active_run_id


class RunNotCancellable(Exception):
    pass


class RunStopped(Exception):
    """Raised inside a run to end it without committing; carries the final status."""

    def __init__(self, status: RunStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class RunCounts:
    pages_fetched: int = 0
    records_fetched: int = 0
    records_valid: int = 0
    records_rejected: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    rows_deleted: int = 0
    rows_kept: int = 0
    rejects_not_stored: int = 0


ProgressCallback = Callable[[RunCounts], None]

# Failures a run expects now and then: logged as one line with a hint, without a traceback.
EXPECTED_FAILURES = (extract.ExtractError, load.MassDeleteRefused, load.TooManyRejects)
UPSTREAM_HINT = (
    "check that SPACEX_API_URL is right and reachable from here; "
    "`make demo` serves the recorded snapshot locally"
)


def hint_for(exc: Exception) -> str | None:
    return UPSTREAM_HINT if isinstance(exc, extract.ExtractError) else None


# Runs executing in this process that were told to stop (by SIGTERM), with the reason.
_interrupted: dict[int, str] = {}
_running_here: set[int] = set()


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
    """Queue a run; the database refuses a second active run (RunConflict), on any replica."""
    for _ in range(3):  # the active run may finish between our insert and our look-up
        run = IngestRun(
            trigger=trigger,
            source_url=extract.redacted(extract.crew_query_url(settings.SPACEX_API_URL)),
            allow_mass_delete=allow_mass_delete,
            dry_run=dry_run,
            owner_id=lease.hold(get_engine()),
            schedule_slot=schedule_slot,
        )
        session.add(run)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            active = active_run(session)
            if active is not None or schedule_slot is not None:
                raise RunConflict(active.id if active else None) from None
            continue
        session.refresh(run)
        return run
    raise RunConflict(None)


def cancel_run(session: Session, run_id: int) -> IngestRun | None:
    """Cancel a queued run at once, or ask a running one to stop at its next checkpoint."""
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
    session.refresh(run)
    return run


def interrupt_local_runs(reason: str) -> None:
    """Make every run of this process stop, roll back and end `failed` with `reason`."""
    for run_id in list(_running_here):
        _interrupted[run_id] = reason


def execute_run(run_id: int, on_progress: ProgressCallback | None = None) -> IngestRun | None:
    """Run extract -> validate -> load for a queued run and record how it ended."""
    with structlog.contextvars.bound_contextvars(run_id=run_id):
        if not mark_running(run_id):
            log.info("run not started: it is no longer queued")
            return None
        _running_here.add(run_id)
        started = time.monotonic()
        counts = RunCounts()
        drift = validate.SchemaDrift()
        run = get_run(run_id)
        log.info("run started", trigger=run.trigger, source_url=run.source_url)
        try:
            run_pipeline(run_id, counts, drift, on_progress or (lambda _: None))
        except RunStopped as stop:
            finish_unsuccessful(run_id, stop.status, str(stop), counts, drift)
        except EXPECTED_FAILURES as exc:  # one line: the cause, page, URL and what to do
            log.error("run failed", error=str(exc), url=run.source_url, hint=hint_for(exc))
            finish_unsuccessful(run_id, RunStatus.failed, str(exc), counts, drift)
        except Exception as exc:  # every failure ends the run truthfully
            log.exception("run failed")
            finish_unsuccessful(run_id, RunStatus.failed, public_error(exc), counts, drift)
        finally:
            _running_here.discard(run_id)
            _interrupted.pop(run_id, None)
        run = get_run(run_id)
        metrics.observe_finished_run(run, time.monotonic() - started)
        log.info(
            "run finished", duration_seconds=round(time.monotonic() - started, 3), **summary(run)
        )
        return run


def run_pipeline(
    run_id: int, counts: RunCounts, drift: validate.SchemaDrift, on_progress: ProgressCallback
) -> None:
    """Everything a run writes to `crew` happens in this one transaction, committed at the end."""
    policy = extract.FetchPolicy.from_settings(settings)
    run = get_run(run_id)
    connection = get_engine().raw_connection()
    try:
        cursor = connection.cursor()
        active_before = load.begin(cursor)
        with extract.make_client(settings.HTTP_TIMEOUT_SECONDS) as client:
            pages = Prefetcher(extract.iter_pages(client, settings.SPACEX_API_URL, policy))
            try:
                while (page := next_page(run_id, pages)) is not None:
                    load_one_page(cursor, run_id, page, counts, drift)
                    on_progress(counts)
            finally:
                pages.close()
        load.refuse_many_rejects(
            counts.records_rejected, counts.records_fetched, settings.INGEST_MAX_REJECT_FRACTION
        )
        counts.rows_kept, counts.rows_deleted = load.soft_delete_vanished(
            cursor,
            run_id,
            active_before,
            settings.INGEST_MAX_DELETE_FRACTION,
            run.allow_mass_delete,
        )
        if run.dry_run:
            finish_dry_run(cursor, run_id, counts, drift)
            return
        commit_success(cursor, run_id, counts, drift)
        connection.commit()
        refresh_statistics(cursor, counts, active_before)
    except BaseException:
        connection.rollback()
        raise
    finally:
        connection.close()


def finish_dry_run(
    cursor: Any, run_id: int, counts: RunCounts, drift: validate.SchemaDrift
) -> None:
    """Keep the run's change list, roll back everything it loaded, then record it succeeded."""
    with tempfile.SpooledTemporaryFile(max_size=CHANGES_SPOOL_BYTES) as spooled:
        changes.spool(cursor, run_id, spooled)
        cursor.connection.rollback()
        spooled.seek(0)
        changes.keep(cursor, spooled)
    commit_success(cursor, run_id, counts, drift)
    cursor.connection.commit()


def refresh_statistics(cursor: Any, counts: RunCounts, active_before: int) -> None:
    """After a run that wrote rows, empty the GIN pending lists it filled, and ANALYZE after a
    large change (autovacuum's 10% rule, applied at once), so the very next reads are planned
    with the new row counts; a first load would otherwise be planned blind."""
    written = counts.rows_inserted + counts.rows_updated + counts.rows_deleted
    if not written:
        return
    try:
        load.clean_gin_pending_lists(cursor)
        if written > 0.1 * active_before:
            cursor.execute("ANALYZE crew, crew_versions")
        cursor.connection.commit()
    except Exception:  # the run is committed; stale statistics and pending lists cost speed
        log.warning("index upkeep after the run failed", exc_info=True)
        cursor.connection.rollback()


def next_page(run_id: int, pages: Prefetcher[extract.Page]) -> extract.Page | None:
    """Wait for the prefetched page, watching for SIGTERM and cancel requests meanwhile."""
    while True:
        check_stop(run_id)
        try:
            return pages.next(timeout=POLL_SECONDS)
        except queue.Empty:
            if cancel_requested(run_id):
                raise RunStopped(RunStatus.cancelled, "cancelled on request") from None


def cancel_requested(run_id: int) -> bool:
    with get_engine().connect() as connection:
        query = text("SELECT cancel_requested FROM ingest_runs WHERE id = :id")
        return bool(connection.execute(query, {"id": run_id}).scalar())


def load_one_page(
    cursor: Any, run_id: int, page: extract.Page, counts: RunCounts, drift: validate.SchemaDrift
) -> None:
    drift.observe(page.records)
    checked = validate.validate_page(page.records)
    page_json = validate.PAGE_ADAPTER.dump_json(checked.crew).decode()
    result = load.load_page(cursor, run_id, page_json, len(checked.crew))
    load.keep_rows(cursor, validate.known_ids(checked.rejects))
    rejects = checked.rejects + validate.repeated_id_rejects(result.repeated_ids, page.records)
    stored = counts.records_rejected - counts.rejects_not_stored
    to_store = rejects[: max(settings.INGEST_MAX_REJECTS_PER_RUN - stored, 0)]
    counts.pages_fetched += 1
    counts.records_fetched += len(page.records)
    counts.records_valid += len(checked.crew) - len(result.repeated_ids)
    counts.records_rejected += len(rejects)
    counts.rejects_not_stored += len(rejects) - len(to_store)
    counts.rows_inserted += result.inserted
    counts.rows_updated += result.updated
    counts.rows_unchanged += result.unchanged
    if record_progress(run_id, counts, to_store):
        raise RunStopped(RunStatus.cancelled, "cancelled on request")


def record_progress(run_id: int, counts: RunCounts, rejects: list[validate.Reject]) -> bool:
    """Save progress and rejects outside the load transaction; return whether cancel was asked."""
    progress = {
        k: v for k, v in asdict(counts).items() if k.startswith(("pages", "records", "rejects"))
    }
    assignments = ", ".join(f"{name} = %({name})s" for name in progress)
    connection = get_engine().raw_connection()
    try:
        cursor = connection.cursor()
        load.save_rejects(cursor, run_id, rejects)
        cursor.execute(
            f"UPDATE ingest_runs SET {assignments} WHERE id = %(id)s RETURNING cancel_requested",
            {**progress, "id": run_id},
        )
        row = cursor.fetchone()
        connection.commit()
    finally:
        connection.close()
    return bool(row and row[0])


def check_stop(run_id: int) -> None:
    if run_id in _interrupted:
        raise RunStopped(RunStatus.failed, _interrupted[run_id])


def commit_success(
    cursor: Any, run_id: int, counts: RunCounts, drift: validate.SchemaDrift
) -> None:
    """Mark the run succeeded inside the load transaction, so data and record commit together.

    Locking the run row first means a concurrent cancel either lands before (and wins) or waits
    and then finds the run finished.
    """
    check_stop(run_id)
    cursor.execute("SELECT cancel_requested FROM ingest_runs WHERE id = %s FOR UPDATE", (run_id,))
    if cursor.fetchone()[0]:
        raise RunStopped(RunStatus.cancelled, "cancelled on request")
    values = {**asdict(counts), "schema_drift": load.jsonb_text(drift.as_json()), "id": run_id}
    assignments = ", ".join(f"{name} = %({name})s" for name in asdict(counts))
    cursor.execute(
        f"UPDATE ingest_runs SET status = 'succeeded', finished_at = clock_timestamp(), "
        f"schema_drift = %(schema_drift)s, {assignments} WHERE id = %(id)s",
        values,
    )


def mark_running(run_id: int) -> bool:
    with get_engine().begin() as connection:
        result = connection.execute(
            text(
                "UPDATE ingest_runs SET status = 'running', started_at = clock_timestamp() "
                "WHERE id = :id AND status = 'queued'"
            ),
            {"id": run_id},
        )
        return result.rowcount == 1


def finish_unsuccessful(
    run_id: int, status: RunStatus, error: str, counts: RunCounts, drift: validate.SchemaDrift
) -> None:
    """Record a failed or cancelled run: its progress counts, no rows written, and why."""
    with get_engine().begin() as connection:
        connection.execute(
            text(
                "UPDATE ingest_runs SET status = :status, error = :error, "
                "finished_at = clock_timestamp(), schema_drift = CAST(:drift AS jsonb), "
                "pages_fetched = :pages, records_fetched = :fetched, records_valid = :valid, "
                "records_rejected = :rejected, rows_inserted = 0, rows_updated = 0, "
                "rows_unchanged = 0, rows_deleted = 0 "
                "WHERE id = :id AND status = 'running'"
            ),
            {
                "id": run_id,
                "status": str(status),
                "error": error,
                "drift": load.jsonb_text(drift.as_json()),
                "pages": counts.pages_fetched,
                "fetched": counts.records_fetched,
                "valid": counts.records_valid,
                "rejected": counts.records_rejected,
            },
        )


def public_error(exc: Exception) -> str:
    """The short cause an unexpected failure shows on the API; SQL and driver text only go to
    the log."""
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    if type(original).__module__.startswith("psycopg2"):
        code = getattr(original, "pgcode", None)
        cause = f"{type(original).__name__}, SQLSTATE {code}" if code else type(original).__name__
        return f"database error while loading ({cause}); details in the log"
    return f"internal error ({type(exc).__name__}); details in the log"


def get_run(run_id: int) -> IngestRun:
    with Session(get_engine()) as session:
        run = session.get(IngestRun, run_id)
        if run is None:
            raise LookupError(f"run {run_id} does not exist")
        return run


def summary(run: IngestRun) -> dict[str, Any]:
    fields = ("status", "trigger", "error", *RunCounts.__dataclass_fields__)
    return {name: getattr(run, name) for name in fields}


def wait_for_local_runs(timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while _running_here and time.monotonic() < deadline:
        time.sleep(0.05)
