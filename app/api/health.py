"""Liveness and readiness, answered however busy or broken the rest of the service is.

`/healthz` runs on the event loop and touches nothing: it answers while every worker thread is
blocked. `/readyz` runs its checks on a thread of its own with short timeouts and answers within
READY_DEADLINE_SECONDS whatever the database does.
"""

import asyncio
from enum import StrEnum
from typing import Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from app import schedule_state
from app.db import probe_engine, schema_is_current
from app.scheduler import state as scheduler_state
from app.shapes import ALWAYS_SENT

router = APIRouter(tags=["health"])

READY_DEADLINE_SECONDS = 1.5


class HealthStatus(StrEnum):
    ok = "ok"
    unavailable = "unavailable"


class Health(BaseModel):
    model_config = ALWAYS_SENT

    status: HealthStatus = Field(description="`ok`, or `unavailable` with the failing checks")
    checks: dict[str, bool] = Field(
        default={},
        description="Readiness checks: database, migrations, recovery, and scheduler when "
        "INGEST_INTERVAL_SECONDS is set",
    )
    problems: list[str] = Field(default=[], description="Why each failing check fails")


Schedule = Literal["running", "paused"] | None


# Readiness adds what an operator should know that is not a failure.
class Readiness(Health):
    schedule: Schedule = Field(
        description="Scheduled runs: `paused` while POST /schedule/pause holds them (ready all "
        "the same); null when the database could not say"
    )


@router.get(
    "/healthz",
    summary="Liveness",
    response_description="The process is up",
    operation_id="get_liveness",
)
async def read_health() -> Health:
    """The process is up and serving requests (no database, no worker thread involved)."""
    return Health(status=HealthStatus.ok)


def readiness(app: FastAPI) -> tuple[dict[str, bool], list[str], Schedule]:
    """Database reachable, migrations at head, start-up recovery done, scheduler ticking; and
    whether the schedule is paused."""
    checks = {"database": False, "migrations": False, "recovery": False}
    problems: list[str] = []
    schedule: Schedule = None
    try:
        with probe_engine().connect() as connection:  # one connection for every check
            connection.execute(text("SELECT 1"))
            checks["database"] = True
            checks["migrations"] = schema_is_current(connection)
            if checks["migrations"]:
                schedule = "paused" if schedule_state.is_paused(connection) else "running"
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
    return checks, problems, schedule


def readiness_checks(app: FastAPI) -> dict[str, bool]:
    return readiness(app)[0]


@router.get(
    "/readyz",
    summary="Readiness",
    response_description="Ready: every check passed",
    operation_id="get_readiness",
    responses={503: {"model": Readiness, "description": "Not ready; `problems` says why"}},
)
async def read_readiness(request: Request) -> Readiness:
    """Database reachable, migrations at head, start-up recovery done, scheduler ticking."""
    try:
        checks, problems, schedule = await asyncio.wait_for(
            asyncio.to_thread(readiness, request.app), READY_DEADLINE_SECONDS
        )
    except TimeoutError:
        checks, problems, schedule = {"database": False}, ["database: no answer in time"], None
    health = Readiness(
        status=HealthStatus.ok if all(checks.values()) else HealthStatus.unavailable,
        checks=checks,
        problems=problems,
        schedule=schedule,
    )
    if health.status != HealthStatus.ok:
        return JSONResponse(health.model_dump(mode="json"), status_code=503)  # type: ignore[return-value]
    return health
