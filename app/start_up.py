"""What the service does once its database answers: migrate (MIGRATE_ON_START), end the runs a
previous process left behind, accept runs, start the watchdog and the webhook delivery worker.

The service starts without its database: `/healthz` answers 200 at once, `/readyz` 503 with the
reason, and this work is retried with backoff until the database answers, logged once per change
of cause (not once per try).
"""

import asyncio

import structlog
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from app.config import settings
from app.db import migrate
from app.ingest import registry, runs
from app.ingest.watchdog import watchdog
from app.notify.worker import worker as webhook_worker
from app.problems import database_problem

log = structlog.get_logger("crew_etl")

FIRST_WAIT_SECONDS = 0.5
MAX_WAIT_SECONDS = 10.0


def prepare() -> None:
    """Migrate and recover; raises the database's error when it does not answer."""
    if settings.MIGRATE_ON_START:
        migrate()
    runs.reap_stale(settings.INGEST_STALE_AFTER_SECONDS)


def unavailable_reason(exc: BaseException) -> str | None:
    """One line for /readyz and the log when the database cannot be reached; None otherwise."""
    problem = database_problem(exc, settings.DATABASE_URL)
    return None if problem is None else str(problem)


def finish(app: FastAPI) -> None:
    registry.accept_runs()
    watchdog.start()  # heartbeats for this process's runs; ends runs abandoned by any process
    webhook_worker.start()  # delivers the outbox; its own threads and connections
    app.state.recovered = True
    app.state.waiting_for_database = None


async def start(app: FastAPI) -> asyncio.Task[None] | None:
    """Prepare now if the database answers; else return the task that keeps trying."""
    try:
        await run_in_threadpool(prepare)
    except DBAPIError as exc:
        reason = unavailable_reason(exc)
        if reason is None:
            raise  # not a database that is away: a bug, or a migration that fails
        app.state.waiting_for_database = reason
        log.warning("waiting for the database", reason=reason)
        return asyncio.create_task(keep_trying(app, reason))
    finish(app)
    return None


async def keep_trying(app: FastAPI, reason: str) -> None:
    wait = FIRST_WAIT_SECONDS
    while True:
        await asyncio.sleep(wait)
        wait = min(wait * 2, MAX_WAIT_SECONDS)
        try:
            await run_in_threadpool(prepare)
        except DBAPIError as exc:
            now = unavailable_reason(exc) or f"database: {type(exc).__name__}"
            if now != reason:  # once per change, not once per try
                log.warning("waiting for the database", reason=now)
                reason = app.state.waiting_for_database = now
            continue
        except Exception as exc:  # a migration that fails: its traceback once, then retried
            now = f"start-up failed: {type(exc).__name__}"
            if now != reason:
                log.exception("start-up failed; trying again")
                reason = app.state.waiting_for_database = now
            wait = MAX_WAIT_SECONDS
            continue
        finish(app)
        log.info("the database answers: migrated and recovered")
        return
