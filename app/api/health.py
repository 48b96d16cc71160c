"""Liveness and readiness, answered however busy or broken the rest of the service is.

`/healthz` runs on the event loop and touches nothing: it answers while every worker thread is
blocked. `/readyz` runs its checks on a thread of its own with short timeouts and answers within
READY_DEADLINE_SECONDS whatever the database does.
"""

import asyncio

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from app.db import probe_engine, schema_is_current
from app.scheduler import state as scheduler_state

router = APIRouter(tags=["health"])

READY_DEADLINE_SECONDS = 1.5


class Health(BaseModel):
    status: str = Field(description="`ok`, or `unavailable` with the failing checks")
    checks: dict[str, bool] = Field(
        default={},
        description="Readiness checks: database, migrations, recovery, and scheduler when "
        "INGEST_INTERVAL_SECONDS is set",
    )
    problems: list[str] = Field(default=[], description="Why each failing check fails")


@router.get("/healthz", summary="Liveness", response_description="The process is up")
async def read_health() -> Health:
    """The process is up and serving requests (no database, no worker thread involved)."""
    return Health(status="ok")


def readiness(app: FastAPI) -> tuple[dict[str, bool], list[str]]:
    """Database reachable, migrations at head, start-up recovery done, scheduler ticking."""
    checks = {"database": False, "migrations": False, "recovery": False}
    problems: list[str] = []
    try:
        with probe_engine().connect() as connection:  # one connection for both checks
            connection.execute(text("SELECT 1"))
            checks["database"] = True
            checks["migrations"] = schema_is_current(connection)
        if not checks["migrations"]:
            problems.append("the schema is not at the newest migration")
    except Exception as exc:  # a down database is an answer here, not an error
        problems.append(f"database: {type(exc).__name__}")
    checks["recovery"] = bool(getattr(app.state, "recovered", False))
    if not checks["recovery"]:
        # while start-up waits for the database: why, with the setting and the fix (app/start_up.py)
        waiting = getattr(app.state, "waiting_for_database", None)
        problems.append(waiting or "start-up recovery has not finished")
    if scheduler_state.interval_seconds:
        problem = scheduler_state.problem()
        checks["scheduler"] = problem is None
        problems += [problem] if problem else []
    return checks, problems


def readiness_checks(app: FastAPI) -> dict[str, bool]:
    return readiness(app)[0]


@router.get(
    "/readyz",
    summary="Readiness",
    response_description="Ready: every check passed",
    responses={503: {"model": Health, "description": "Not ready; `problems` says why"}},
)
async def read_readiness(request: Request) -> Health:
    """Database reachable, migrations at head, start-up recovery done, scheduler ticking."""
    try:
        checks, problems = await asyncio.wait_for(
            asyncio.to_thread(readiness, request.app), READY_DEADLINE_SECONDS
        )
    except TimeoutError:
        checks, problems = {"database": False}, ["database: no answer in time"]
    health = Health(
        status="ok" if all(checks.values()) else "unavailable", checks=checks, problems=problems
    )
    if health.status != "ok":
        return JSONResponse(health.model_dump(), status_code=503)  # type: ignore[return-value]
    return health
