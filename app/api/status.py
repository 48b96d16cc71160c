"""`GET /`: the status page. HTML for a browser, the same summary as JSON at `GET /status` (and
at `GET /` for `Accept: application/json`); both from one database snapshot (see
app/status/summary.py)."""

import functools
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import humanize
import mimeparse  # type: ignore[import-untyped]
import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.routing import NoMatchFound

from app.api.health import readiness_checks
from app.api.responses import (
    CACHE_CONTROL,
    RETRY_AFTER,
    RETRY_AFTER_SECONDS,
    VARY,
    DatabaseUnavailable,
)
from app.config import settings
from app.db import get_engine, hold_crew
from app.db_errors import driver_cause as database_cause
from app.shapes import ALWAYS_SENT
from app.status.chart import format_count, format_seconds, run_chart
from app.status.summary import Snapshot, read_snapshot, run_counts

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates

log = structlog.get_logger("crew_etl.status")

router = APIRouter(tags=["status"])


@functools.cache
def templates() -> "Jinja2Templates":
    """Built at the first page view: Jinja2 would add a noticeable share to process start-up."""
    from fastapi.templating import Jinja2Templates

    loaded = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
    loaded.env.filters.update(
        seconds=format_seconds,
        compact=format_count,
        thousands="{:,}".format,
        words=lambda name: name.replace("_", " "),
    )
    return loaded


CHANGES_ROUTE = "read_ingest_changes"  # GET /ingest/{run_id}/changes: what a run changed
EVENTS_ROUTE = "stream_ingest_events"  # GET /ingest/{run_id}/events: a run followed live


class ServiceInfo(BaseModel):
    name: str = Field(description="Service name")
    version: str = Field(description="Service version")
    ready: bool = Field(description="Whether /readyz would answer 200")
    checks: dict[str, bool] = Field(description="Its readiness checks")


# How to start a run by hand; the token itself is never part of the page.
class TriggerInfo(BaseModel):
    model_config = ALWAYS_SENT

    method: str = Field(default="POST", description="HTTP method that starts a run")
    path: str = Field(default="/ingest", description="Path that starts a run")
    token_required: bool = Field(description="Whether a bearer token is needed")
    schedule_interval_seconds: float = Field(
        description="Seconds between scheduled runs; 0: no schedule"
    )


# The page's content, as `Accept: application/json` returns it.
class StatusSummary(Snapshot):
    service: ServiceInfo = Field(description="The service and its readiness")
    trigger: TriggerInfo = Field(description="How to start a run by hand")


# The answer while the database cannot be read: the service's own view of its readiness.
class StatusUnavailable(DatabaseUnavailable):
    service: ServiceInfo = Field(description="The service and its readiness")


def wants_json(accept: str | None) -> bool:
    """True when the client prefers JSON to HTML; browsers and `*/*` get HTML."""
    if not accept:
        return False
    try:
        best = mimeparse.best_match(["application/json", "text/html"], accept)
    except ValueError:  # a malformed Accept header gets the page
        return False
    return bool(best == "application/json")


def service_info(app: FastAPI) -> ServiceInfo:
    checks = readiness_checks(app)
    return ServiceInfo(
        name=app.title, version=app.version, ready=all(checks.values()), checks=checks
    )


def read_summary(app: FastAPI, service: ServiceInfo) -> StatusSummary:
    with get_engine().connect() as connection:
        snapshot_connection = connection.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        with snapshot_connection.begin():
            hold_crew(snapshot_connection)
            snapshot = read_snapshot(
                snapshot_connection, settings.stale_after_seconds, len(settings.WEBHOOK_URL)
            )
    if snapshot.last_run is not None:
        snapshot.last_run.changes_url = route_path(
            app, CHANGES_ROUTE, run_id=snapshot.last_run.run.id
        )
    trigger = TriggerInfo(
        token_required=settings.INGEST_API_TOKEN is not None,
        schedule_interval_seconds=settings.INGEST_INTERVAL_SECONDS,
    )
    return StatusSummary(**dict(snapshot), service=service, trigger=trigger)


def route_path(app: FastAPI, name: str, **params: Any) -> str | None:
    """The path of the named route, or None where this service has no such route."""
    try:
        return str(app.url_path_for(name, **params))
    except NoMatchFound:
        return None


def page_context(summary: StatusSummary | None, now: datetime) -> dict[str, Any]:
    return {
        "summary": summary,
        "chart": run_chart(summary.recent_runs) if summary else None,
        "counts": run_counts(summary.last_run.run) if summary and summary.last_run else {},
        "ago": lambda moment: humanize.naturaltime(moment, when=now),
        "span": lambda seconds: humanize.naturaldelta(seconds),
    }


STATUS_HEADERS = {"Cache-Control": CACHE_CONTROL}
PAGE_HEADERS = {**STATUS_HEADERS, "Vary": VARY}
UNAVAILABLE = {
    "description": "The database cannot be read: retry after `Retry-After` seconds",
    "model": StatusUnavailable,
}


@router.get(
    "/status",
    summary="Status summary",
    response_description="The summary the status page shows",
    response_model=StatusSummary,
    operation_id="get_status",
    responses={
        200: {"headers": STATUS_HEADERS},
        503: {**UNAVAILABLE, "headers": {**STATUS_HEADERS, "Retry-After": RETRY_AFTER}},
    },
)
def read_status_json(request: Request) -> Response:
    """Freshness, the last run and its first rejects, the last 50 runs, crew counts and how to
    start a run: what `GET /` shows a browser, as JSON."""
    return status_answer(request, as_json=True, headers={"Cache-Control": "no-cache"})


HTML = {"text/html": {"schema": {"type": "string"}}}


@router.get(
    "/",
    summary="Status page",
    response_model=StatusSummary,
    response_description="The status page (HTML); the summary as JSON when `Accept` prefers "
    "`application/json`",
    operation_id="get_status_page",
    responses={
        200: {"content": HTML, "headers": PAGE_HEADERS},
        503: {
            **UNAVAILABLE,
            "content": HTML,
            "headers": {**PAGE_HEADERS, "Retry-After": RETRY_AFTER},
        },
    },
)
def read_status(request: Request) -> Response:
    """For browsers: HTML for any `Accept` that does not prefer `application/json` (`*/*`
    included); the JSON of `GET /status` when it does. Clients should call `GET /status`."""
    as_json = wants_json(request.headers.get("accept"))
    return status_answer(request, as_json, {"Vary": "Accept", "Cache-Control": "no-cache"})


def status_answer(request: Request, as_json: bool, headers: dict[str, str]) -> Response:
    """The summary as JSON or as the page, 503 when the database cannot be read."""
    service = service_info(request.app)
    try:
        summary: StatusSummary | None = read_summary(request.app, service)
    except SQLAlchemyError as exc:
        log.warning("status page: database unavailable", exc_info=True)
        summary, cause = None, database_cause(exc)
    if summary is None:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        body = StatusUnavailable(detail="database unavailable", cause=cause, service=service)
        if as_json:
            return JSONResponse(body.model_dump(mode="json"), 503, headers=headers)
    elif as_json:
        return Response(summary.model_dump_json(), media_type="application/json", headers=headers)
    now = summary.generated_at if summary else datetime.now().astimezone()
    context = {**page_context(summary, now), "service": service, "base_url": request.base_url}
    if summary is not None and summary.last_run is not None:  # followed live by the page
        run_id = summary.last_run.run.id
        context["events_url"] = route_path(request.app, EVENTS_ROUTE, run_id=run_id)
    return templates().TemplateResponse(
        request,
        "status.html",
        context,
        status_code=503 if summary is None else 200,
        headers=headers,
    )
