"""What a run does: extract -> validate -> load in one transaction, watching for reasons to stop.

How a run is created, and how its end is recorded, is app/ingest/service.py's business.
"""

import json
import queue
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from app.config import settings
from app.db import background_engine
from app.ingest import bulk, changes, extract, listing, load, registry, rewrite, runs, validate
from app.ingest.prefetch import Prefetcher
from app.ingest.watchdog import timed_out
from app.models import IngestRun, RunStatus

log = structlog.get_logger("crew_etl.ingest")

UPKEEP_LIMITS = "SET LOCAL lock_timeout = '5s'; SET LOCAL statement_timeout = '10min'"
POLL_SECONDS = 0.5  # how often a run waiting on the upstream checks whether it must stop
CHANGES_SPOOL_BYTES = 8 * 1024 * 1024  # a dry run's change list beyond this waits on disk


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


def run_pipeline(
    local: registry.LocalRun,
    run: IngestRun,
    counts: RunCounts,
    drift: validate.SchemaDrift,
    on_progress: ProgressCallback,
) -> None:
    """Everything a run writes to `crew` happens in this one transaction, committed at the end."""
    policy = extract.FetchPolicy.from_settings(settings)
    connection = background_engine().raw_connection()
    connection.detach()  # may be terminated by another process (runs.END_LOAD_CONNECTIONS)
    try:
        local.load_connection = connection.dbapi_connection
        cursor = connection.cursor()
        active_before, stage = load.begin(cursor, local.run_id)
        bounded: list[str] = []  # pages written into a stage, for their name bounds (bulk.py)
        moved = False
        with extract.make_client(settings.HTTP_TIMEOUT_SECONDS) as client:
            fetched = listing.iter_pages(client, settings.SPACEX_API_URL, policy)
            pages = Prefetcher(checked_pages(fetched, settings.INGEST_MAX_REJECTS_PER_RUN))
            # a dry run is rolled back: a rebuild would only hold crew's writers off for nothing
            may_rebuild = active_before >= rewrite.MIN_ACTIVE and not run.dry_run
            try:
                while (page := next_page(local, pages)) is not None:
                    load_one_page(cursor, local, page, counts, drift, stage)
                    if stage is not None:  # one string a page: 200,000 small ones cost 30 MB
                        bounded.append(json.dumps(page.bounded))
                    elif may_rebuild and rebuild_now(counts, active_before):
                        stage = rewrite.switch(cursor, local.run_id)
                        may_rebuild = False
                    on_progress(counts)
            finally:
                pages.close()
        load.refuse_many_rejects(
            counts.records_rejected, counts.records_fetched, settings.INGEST_MAX_REJECT_FRACTION
        )
        counts.rows_kept, counts.rows_deleted = load.soft_delete_vanished(
            cursor,
            local.run_id,
            active_before,
            settings.INGEST_MAX_DELETE_FRACTION,
            run.allow_mass_delete,
            stage,
        )
        if stage is None:
            load.widen_name_bounds(cursor)
        check_stop(local)
        if run.dry_run:
            finish_dry_run(cursor, local.run_id, counts, drift)
            return
        if stage is not None:
            if stage.replaces_rows:
                rewrite.copy_rest(cursor, stage)
            if bulk.build(cursor, stage, bounded, lambda: background_engine().raw_connection()):
                check_stop(local)
                moved = bulk.move_in(cursor, stage)
        commit_success(cursor, local.run_id, counts, drift)
        local.load_connection = None  # committed: nothing left for the watchdog to cancel
        refresh_statistics(cursor, counts, active_before, analyzed=moved)
    except BaseException:
        quietly(connection.rollback)  # on a dead connection this fails too: keep the cause
        raise
    finally:
        local.load_connection = None
        quietly(connection.close)


def rebuild_now(counts: RunCounts, active_before: int) -> bool:
    changed = counts.rows_inserted + counts.rows_updated
    return rewrite.worth_it(active_before, counts.records_valid, changed)


def quietly(action: Callable[[], object]) -> None:
    """Clean-up after a failure must not replace the failure (a rollback on a connection the
    server closed says "connection already closed", hiding why it closed)."""
    try:
        action()
    except Exception as exc:
        log.debug("clean-up failed after an earlier error", error=type(exc).__name__)


def commit_success(
    cursor: Any, run_id: int, counts: RunCounts, drift: validate.SchemaDrift
) -> None:
    """Record success in the load transaction and commit both, or stop as cancelled."""
    if not runs.commit_succeeded(cursor, run_id, counts, load.jsonb_text(drift.as_json())):
        raise RunStopped(RunStatus.cancelled, "cancelled on request")
    cursor.connection.commit()


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


def refresh_statistics(
    cursor: Any, counts: RunCounts, active_before: int, analyzed: bool = False
) -> None:
    """After a run that wrote rows: empty the GIN pending lists it filled; VACUUM crew, so that
    the visibility map covers the rows it wrote (until then an index-only walk, such as a
    name-sorted page, visits the table for each of them); and ANALYZE after a large change
    (autovacuum's 10% rule, applied at once), so the very next reads are planned with the new
    row counts. A first load would otherwise be planned blind and read slowly until autovacuum
    comes by. A first load analyzed crew before moving it in (`analyzed`, app/ingest/bulk.py)."""
    written = counts.rows_inserted + counts.rows_updated + counts.rows_deleted
    if not written:
        return
    large = written > 0.1 * active_before
    try:
        # Bounded: an operator's long ANALYZE or index build must not hold the run's thread.
        # Per transaction, and SKIP_LOCKED for VACUUM (which cannot run in one): a session
        # setting would outlive us on a pooler's server connection.
        cursor.execute(UPKEEP_LIMITS)
        load.clean_gin_pending_lists(cursor)
        cursor.connection.commit()
        cursor.connection.autocommit = True  # VACUUM runs outside a transaction
        analyze = large and not analyzed
        cursor.execute(
            "VACUUM (SKIP_LOCKED, ANALYZE) crew" if analyze else "VACUUM (SKIP_LOCKED) crew"
        )
        if large:
            cursor.execute("ANALYZE (SKIP_LOCKED) crew_versions")
        for notice in cursor.connection.notices:
            if "lock not available" in notice:
                log.warning("index upkeep skipped a locked table", notice=notice.strip())
    except Exception:  # the run is committed; stale statistics and pending lists cost speed
        log.warning("index upkeep after the run failed", exc_info=True)


def next_page(
    local: registry.LocalRun, pages: Prefetcher[validate.CheckedPage]
) -> validate.CheckedPage | None:
    """Wait for the prefetched page, stopping as soon as the run is told to (signal, cancel,
    deadline, another process ending it)."""
    while True:
        check_stop(local)
        try:
            return pages.next(timeout=POLL_SECONDS)
        except queue.Empty:
            continue


def check_stop(local: registry.LocalRun) -> None:
    if local.stop_reason is not None:
        raise RunStopped(RunStatus(local.stop_status), local.stop_reason)
    if time.monotonic() > local.deadline:
        raise RunStopped(RunStatus.failed, timed_out(local))


def checked_pages(
    pages: Iterator[listing.Page], max_rejects: int
) -> Iterator[validate.CheckedPage]:
    """Each page checked, in the prefetch thread. A page keeps its rejects in full only while
    the run may still store some: load_one_page stores at most max_rejects, counting these
    rejects and ones it finds itself, so it never needs more than are kept here."""
    for page in pages:
        checked = validate.check_page(page.records, keep_rejects=max_rejects)
        max_rejects = max(max_rejects - checked.rejected, 0)
        yield checked


def load_one_page(
    cursor: Any,
    local: registry.LocalRun,
    page: validate.CheckedPage,
    counts: RunCounts,
    drift: validate.SchemaDrift,
    stage: bulk.Stage | None,
) -> None:
    drift.add(page.drift)
    result = load.load_page(cursor, local.run_id, page.crew_json, page.valid, stage)
    load.keep_rows(cursor, page.kept_ids)
    rejects = page.rejects + validate.repeated_id_rejects(result.repeated_ids, page.records)
    rejected = page.rejected + len(result.repeated_ids)
    stored = counts.records_rejected - counts.rejects_not_stored
    to_store = rejects[: max(settings.INGEST_MAX_REJECTS_PER_RUN - stored, 0)]
    counts.pages_fetched += 1
    counts.records_fetched += len(page.records)
    counts.records_valid += page.valid - len(result.repeated_ids)
    counts.records_rejected += rejected
    counts.rejects_not_stored += rejected - len(to_store)
    counts.rows_inserted += result.inserted
    counts.rows_updated += result.updated
    counts.rows_unchanged += result.unchanged
    local.page = counts.pages_fetched + 1
    if record_progress(local.run_id, counts, to_store):
        raise RunStopped(RunStatus.cancelled, "cancelled on request")


def record_progress(run_id: int, counts: RunCounts, rejects: list[validate.Reject]) -> bool:
    """Save progress and rejects outside the load transaction; return whether cancel was asked.
    Raises runs.RunLost when another process ended the run."""
    progress = {
        k: v for k, v in asdict(counts).items() if k.startswith(("pages", "records", "rejects"))
    }
    connection = background_engine().raw_connection()
    try:
        cursor = connection.cursor()
        load.save_rejects(cursor, run_id, rejects)
        cancel = runs.record_progress(cursor, run_id, progress)
        connection.commit()
    except Exception as exc:
        runs.note_failed_write(exc)
        raise
    finally:
        quietly(connection.close)
    return cancel
