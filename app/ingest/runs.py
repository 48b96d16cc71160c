"""The run record's life in SQL: start, progress, heartbeat, success, failure, reaping.

Every change after creation is fenced: it applies only while the run is in the state the writer
expects and still owned by the writer's process (`owner_id`). A process that lost its run (ended
by another process after its heartbeat stopped) can therefore never overwrite that record, and
its data, written in the transaction that records success, rolls back with the refused write.

Every write here that ends a run also queues its webhook event, in the same transaction: a
trigger on `ingest_runs` (migration 0013) writes the outbox row that app/notify delivers.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import stamina
import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app import db_errors
from app.config import settings
from app.db import background_engine, get_engine
from app.ingest.load import RUN_LOCK_CLASS
from app.ingest.registry import OWNER_ID

log = structlog.get_logger("crew_etl.ingest")

OWNED_AND_RUNNING = "id = %(id)s AND status = 'running' AND owner_id = %(owner)s"

MARK_RUNNING = """
UPDATE ingest_runs SET status = 'running', started_at = clock_timestamp(),
    heartbeat_at = clock_timestamp()
WHERE id = %(id)s AND status = 'queued' AND owner_id = %(owner)s
"""
HEARTBEAT = """
UPDATE ingest_runs SET heartbeat_at = clock_timestamp()
WHERE id = ANY(%(ids)s) AND status = 'running' AND owner_id = %(owner)s
RETURNING id, cancel_requested
"""
# Any process may end a run whose owner went quiet; the record says since when.
SILENT = (
    "status IN ('queued', 'running') AND "
    "coalesce(heartbeat_at, created_at) < clock_timestamp() - make_interval(secs => %(stale)s)"
)
STALE = f"SELECT id FROM ingest_runs WHERE {SILENT}"
REAP_STALE = f"""
UPDATE ingest_runs SET status = 'failed', finished_at = clock_timestamp(),
    error = 'abandoned: no heartbeat since '
        || to_char(coalesce(heartbeat_at, created_at) AT TIME ZONE 'UTC',
                   'YYYY-MM-DD"T"HH24:MI:SS"Z"')
WHERE id = ANY(%(ids)s) AND {SILENT}
RETURNING id
"""
FINISH_UNSUCCESSFUL = f"""
UPDATE ingest_runs SET status = %(status)s, error = %(error)s, finished_at = clock_timestamp(),
    schema_drift = %(drift)s::jsonb, pages_fetched = %(pages)s, records_fetched = %(fetched)s,
    records_valid = %(valid)s, records_rejected = %(rejected)s, rows_inserted = 0,
    rows_updated = 0, rows_unchanged = 0, rows_deleted = 0, rows_kept = 0
WHERE {OWNED_AND_RUNNING}
"""
# A run's load transaction holds the advisory lock (load.RUN_LOCK_CLASS, run id) while it
# lives, so a process that ends an abandoned run can also end the transaction its silent owner
# still holds open (and the row locks that would block the next run); the owner, if it wakes
# up, finds its connection gone. The lock names that transaction only, never a session: behind
# a transaction-mode pooler the server connection is another client's once it has ended.
LOAD_LOCKS = f"""
pg_locks l WHERE l.locktype = 'advisory' AND l.classid = {RUN_LOCK_CLASS}::oid
  AND l.objsubid = 2 AND l.granted AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
END_LOAD_CONNECTIONS = f"""
SELECT count(pg_terminate_backend(l.pid)) FROM {LOAD_LOCKS}
  AND l.objid = ANY(%(ids)s::oid[])
"""
END_ORPHANED_LOAD_CONNECTIONS = f"""
SELECT count(pg_terminate_backend(l.pid)) FROM {LOAD_LOCKS}
  AND EXISTS (SELECT 1 FROM ingest_runs r
              WHERE r.id = l.objid::bigint AND r.status NOT IN ('queued', 'running'))
"""
WHY_NOT_OWNED = "SELECT status, owner_id, cancel_requested FROM ingest_runs WHERE id = %(id)s"


# Since when (time.monotonic()) this process's last write failed for a transient reason (the
# database read-only or away), if it did. No run could prove itself alive meanwhile: stale-run
# reaping waits one stale window after that, so a live run is ended truthfully by its owner
# instead of as `abandoned`.
_writes_failed_at: float | None = None


class RunLost(Exception):
    """The run is no longer this process's to finish: another process ended it."""


# Held by whoever queues a run until its transaction ends: creators (API, CLI, scheduler, on any
# replica) queue one at a time, so QUEUE_RUN's check sees every run queued before it. The key is
# a constant no other advisory lock here uses.
RUN_CREATION_LOCK = 0x63726577_65746C  # "crew" "etl"
LOCK_RUN_CREATION = "SELECT pg_advisory_xact_lock(%(key)s)"
# Queues a run unless one is queued or running or its schedule slot is taken. An INSERT ...
# SELECT whose WHERE is false produces no row and so never calls nextval: a refused run uses up
# no id, where a refused INSERT ... VALUES would (the unique index rejects it after nextval).
# The partial unique indexes stay the guarantee for a creator that skips the lock.
QUEUE_RUN = """
INSERT INTO ingest_runs (status, trigger, source_url, allow_mass_delete, dry_run, owner_id,
    schedule_slot, pages_fetched, records_fetched, records_valid, records_rejected,
    rows_inserted, rows_updated, rows_unchanged, rows_deleted)
SELECT 'queued', %(trigger)s, %(source_url)s, %(allow_mass_delete)s, %(dry_run)s, %(owner)s,
    %(schedule_slot)s, 0, 0, 0, 0, 0, 0, 0, 0
WHERE NOT EXISTS (SELECT FROM ingest_runs WHERE status IN ('queued', 'running'))
  AND NOT EXISTS (SELECT FROM ingest_runs WHERE schedule_slot = %(schedule_slot)s)
RETURNING id
"""

# Bookkeeping statements never wait long on a lock (a silent process's open transaction may
# hold one): they fail, and the caller tries again later.
SHORT_TIMEOUTS = "SET LOCAL lock_timeout = '2s'; SET LOCAL statement_timeout = '10s'"


def fenced(run_id: int) -> dict[str, Any]:
    return {"id": run_id, "owner": OWNER_ID}


@contextmanager
def short_transaction(engine: Engine | None = None) -> Iterator[Connection]:
    try:
        with (engine or background_engine()).begin() as connection:
            connection.exec_driver_sql(SHORT_TIMEOUTS)
            yield connection
    except Exception as exc:
        note_failed_write(exc)
        raise


def note_failed_write(exc: Exception) -> None:
    global _writes_failed_at
    if db_errors.is_transient(exc):
        _writes_failed_at = time.monotonic()


def writes_settled(stale_after_seconds: float) -> bool:
    """No transient write failure here for a stale window: silence means abandonment again."""
    failed_at = _writes_failed_at
    return failed_at is None or time.monotonic() - failed_at > stale_after_seconds


def queue_run(values: dict[str, Any]) -> int | None:
    """The id of the run queued with `values`, or None when another run is active or the
    schedule slot is taken; on the API's connections."""
    try:
        with short_transaction(get_engine()) as connection:
            connection.exec_driver_sql(LOCK_RUN_CREATION, {"key": RUN_CREATION_LOCK})
            queued = connection.exec_driver_sql(QUEUE_RUN, {**values, "owner": OWNER_ID})
            return queued.scalar_one_or_none()
    except IntegrityError:  # a creator that took no lock (an older replica) queued one first
        return None


def mark_running(run_id: int) -> bool:
    with short_transaction() as connection:
        return connection.exec_driver_sql(MARK_RUNNING, fenced(run_id)).rowcount == 1


def record_progress(cursor: Any, run_id: int, progress: dict[str, int]) -> bool:
    """Save progress counts; return whether a cancel was asked. RunLost if no longer ours."""
    assignments = ", ".join(f"{name} = %({name})s" for name in progress)
    cursor.execute(SHORT_TIMEOUTS)
    cursor.execute(
        f"UPDATE ingest_runs SET {assignments} WHERE {OWNED_AND_RUNNING} "
        "RETURNING cancel_requested",
        {**progress, **fenced(run_id)},
    )
    row = cursor.fetchone()
    if row is None:
        raise RunLost(f"run {run_id} was ended by another process")
    return bool(row[0])


def commit_succeeded(cursor: Any, run_id: int, counts: Any, drift_json: str) -> bool:
    """Record success inside the load transaction, so data and record commit together.

    Returns False when a cancel arrived first (the caller rolls back and records it); raises
    RunLost when the run is no longer running under this owner.
    """
    values = {**asdict(counts), "schema_drift": drift_json, **fenced(run_id)}
    assignments = ", ".join(f"{name} = %({name})s" for name in asdict(counts))
    cursor.execute(
        f"UPDATE ingest_runs SET status = 'succeeded', finished_at = clock_timestamp(), "
        f"schema_drift = %(schema_drift)s, {assignments} "
        f"WHERE {OWNED_AND_RUNNING} AND NOT cancel_requested",
        values,
    )
    if cursor.rowcount == 1:
        return True
    cursor.execute(WHY_NOT_OWNED, fenced(run_id))
    status, owner, cancel_requested = cursor.fetchone()
    if status == "running" and owner == OWNER_ID and cancel_requested:
        return False
    raise RunLost(f"run {run_id} was ended by another process (now {status})")


def finish_unsuccessful(run_id: int, status: str, error: str, values: dict[str, Any]) -> None:
    """Record a failed or cancelled run, retrying while the database is away: the record must
    land, or the run stays visibly alive (its heartbeat goes on) until it does. A run already
    ended by another process keeps that record."""
    retrying = stamina.retry_context(
        on=db_errors.is_transient,
        attempts=None,
        timeout=settings.INGEST_RUN_TIMEOUT_SECONDS,
        wait_initial=0.2,
        wait_max=5,
    )
    params = {**values, "status": status, "error": error, **fenced(run_id)}
    try:
        for attempt in retrying:
            with attempt, short_transaction() as connection:
                if connection.exec_driver_sql(FINISH_UNSUCCESSFUL, params).rowcount == 0:
                    log.warning("run end not recorded: another process ended it first")
    except DBAPIError as exc:  # would fail the same way again: the run is left to be reaped
        log.error("run end not recorded", run_id=run_id, cause=db_errors.describe(exc))


def heartbeat(run_ids: list[int]) -> dict[int, bool]:
    """Prove the local runs alive; return those still ours with whether a cancel was asked."""
    with short_transaction() as connection:
        rows = connection.exec_driver_sql(HEARTBEAT, {"ids": run_ids, "owner": OWNER_ID}).all()
    return {run_id: bool(cancel) for run_id, cancel in rows}


def reap_stale(stale_after_seconds: float, engine: Engine | None = None) -> list[int]:
    """End `failed` every queued or running run whose owner has been silent for too long.

    The silent owner's load connection is terminated first: its open transaction may hold row
    locks (on `crew`, or on the run's row if it was about to commit) that would block the next
    run, or this very update.
    """
    if not writes_settled(stale_after_seconds):
        return []
    with short_transaction(engine) as connection:
        stale = connection.exec_driver_sql(STALE, {"stale": stale_after_seconds}).scalars().all()
    if not stale:
        return []
    end_load_connections(list(stale), engine)
    with short_transaction(engine) as connection:
        params = {"stale": stale_after_seconds, "ids": list(stale)}
        run_ids = connection.exec_driver_sql(REAP_STALE, params).scalars().all()
    if run_ids:
        log.warning("ended abandoned runs", run_ids=run_ids)
    return list(run_ids)


def end_load_connections(run_ids: list[int] | None, engine: Engine | None = None) -> int:
    """Terminate the load connections of these runs, or (None) of every run that is no longer
    running: an owner that lost its run must not keep its transaction, or its locks, open."""
    with short_transaction(engine) as connection:
        if run_ids is None:
            statement, params = END_ORPHANED_LOAD_CONNECTIONS, {}
        else:
            statement, params = END_LOAD_CONNECTIONS, {"ids": run_ids}
        return int(connection.exec_driver_sql(statement, params).scalar_one())


def reap_stale_quietly() -> None:
    """Reap before a request or tick creates or cancels a run, on the API's connections (not the
    watchdog's); a database that is away is the caller's next problem, not this one's."""
    try:
        reap_stale(settings.INGEST_STALE_AFTER_SECONDS, get_engine())
    except (DBAPIError, PoolTimeout) as exc:
        log.warning("could not look for abandoned runs", error=type(exc).__name__)
