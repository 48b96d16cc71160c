"""The FastAPI app. Start-up migrates, recovers interrupted runs and starts the scheduler."""

import asyncio
import contextlib
import gc
import signal
import threading
from collections.abc import AsyncIterator
from types import FrameType

import structlog
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_fastapi_instrumentator import Instrumentator
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from app import db_errors, metrics
from app import start_up as database_start
from app.api import crew, events, health, history, ingest, schedule, status, webhooks
from app.api.document import keep_null_examples
from app.api.methods import HeadAsGet, allowed_methods
from app.api.responses import RETRY_AFTER_SECONDS, DatabaseUnavailable
from app.change_models import ChangePublic, CrewVersionPublic
from app.config import settings
from app.db import database_location
from app.db_errors import driver_cause
from app.ingest import service
from app.ingest.watchdog import watchdog
from app.logs import AccessLog, configure_logging
from app.models import CrewPublic, IngestRejectPublic, IngestRunPublic
from app.notify.worker import worker as webhook_worker
from app.scheduler import run_schedule
from app.uvicorn_cli import refuse_a_port_in_use

# At import, before the server logs its first line: with LOG_FORMAT=json every line is JSON.
configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
log = structlog.get_logger("crew_etl")
refuse_a_port_in_use()

SHUTDOWN_GRACE_SECONDS = 25
DOCS_ASSETS = "/docs-assets"


def interrupt_runs_on_signals() -> None:
    """Chain onto the server's SIGTERM/SIGINT handlers: running ingests roll back and end
    `failed` with an `interrupted` error, and the server waits for them as background tasks;
    event streams end at once."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread (not under TestClient)
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)

        def handler(received: int, frame: FrameType | None, previous: object = previous) -> None:
            reason = f"interrupted: received {signal.Signals(received).name}"
            service.interrupt_local_runs(reason, and_later_ones=True)
            events.hub.close_streams()  # or the server would wait for them before stopping
            if callable(previous):
                previous(received, frame)

        signal.signal(signum, handler)


async def start_up(app: FastAPI) -> "asyncio.Task[None] | None":
    """Returns the task still waiting for the database, if it did not answer."""
    metrics.install_retry_hooks()
    metrics.forget_dead_workers()
    log.info("starting", data=database_location(), docs="/docs")
    if settings.INGEST_API_TOKEN is None:
        log.warning("INGEST_API_TOKEN is not set: anyone who can reach the API can start runs")
    return await database_start.start(app)


def freeze_start_up_objects() -> bool:
    """Leave what start-up built (about 116,000 objects: modules, models, routes, the pool) out of
    the collector's full passes, which walked them all: 73 ms on a busy 2-core machine, in which
    every request in flight waited. Under load that pause was the p99 of a list query.

    Returns False when objects are frozen already: another app started in this process (tests)
    froze them and thaws them when it stops."""
    if gc.get_freeze_count():
        return False
    gc.collect()
    gc.freeze()
    return True


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    waiting = await start_up(app)
    interrupt_runs_on_signals()
    scheduler = None
    if settings.INGEST_INTERVAL_SECONDS > 0:
        scheduler = asyncio.create_task(run_schedule(settings.INGEST_INTERVAL_SECONDS))
    froze = freeze_start_up_objects()
    try:
        yield
        for task in (scheduler, waiting):
            if task is not None:
                task.cancel()
        service.interrupt_local_runs("interrupted: service shutting down")
        await run_in_threadpool(service.wait_for_local_runs, SHUTDOWN_GRACE_SECONDS)
        watchdog.stop()
        webhook_worker.stop()
    finally:
        metrics.worker_exits()
        if froze:  # an app started again in the same process (tests) freezes afresh
            gc.unfreeze()


# FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from the service itself (no CDN)
app = FastAPIOffline(
    title="SpaceX crew ETL",
    summary="Ingests the SpaceX crew API into PostgreSQL and serves it back.",
    version="0.1.0",
    lifespan=lifespan,
    static_url=DOCS_ASSETS,
    swagger_ui_parameters={"validatorUrl": None},  # the badge would call validator.swagger.io
)
app.include_router(crew.router)
app.include_router(history.router)
app.include_router(ingest.router)
app.include_router(events.router)
app.include_router(health.router)
app.include_router(status.router)
app.include_router(webhooks.router)
app.include_router(schedule.router)
keep_null_examples(
    app, (CrewPublic, CrewVersionPublic, ChangePublic, IngestRunPublic, IngestRejectPublic)
)
app.add_middleware(HeadAsGet)  # inside AccessLog, which logs the HEAD as received
app.add_middleware(AccessLog)
Instrumentator(excluded_handlers=["/metrics", f"{DOCS_ASSETS}.*"]).instrument(app)


@app.get("/metrics", include_in_schema=False)
async def read_metrics() -> Response:
    """Prometheus exposition, on the event loop: it answers while every worker thread waits."""
    return Response(generate_latest(metrics.scrape_registry()), media_type=CONTENT_TYPE_LATEST)


@app.exception_handler(DBAPIError)
@app.exception_handler(PoolTimeout)
async def database_unavailable(request: Request, exc: Exception) -> Response:
    """A database that is down, restarting, read-only (a failover) or too slow is a 503 to retry,
    never a 500 or a hang (connect, pool and statement timeouts bound how long a request waits
    for it). Any other database error is a JSON 500 whose details go to the log only."""
    cause = driver_cause(exc)
    if not db_errors.is_transient(exc):
        log.error("database error", path=request.url.path, cause=cause, exc_info=exc)
        return JSONResponse({"detail": "internal error; details in the log"}, status_code=500)
    log.warning("database unavailable", path=request.url.path, cause=db_errors.describe(exc))
    if db_errors.sqlstate(exc) == db_errors.READ_ONLY:
        detail = "the database is read-only right now (a failover?); try again shortly"
    else:
        detail = "the database is unavailable or too slow right now; try again shortly"
    body = DatabaseUnavailable(detail=detail, cause=cause)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return JSONResponse(body.model_dump(), status_code=503, headers=headers)


@app.exception_handler(405)
async def method_not_allowed(request: Request, exc: HTTPException) -> Response:
    """List every method the path supports in `Allow` (Starlette names only the first route's)."""
    allowed = allowed_methods(app.router.routes, request.scope)
    exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
    return await http_exception_handler(request, exc)
