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

from app import db_routing, schedule_state
from app.db import probe_engine, schema_is_current
from app.scheduler import state as scheduler_state
from app.shapes import ALWAYS_SENT

router = APIRouter(tags=["health"])

READY_DEADLINE_SECONDS = 1.5


class HealthStatus(StrEnum):
    ok = "ok"
    unavailable = "unavailable"


# Writes are refused on a standby (in recovery: a failover not finished, or DATABASE_URL
# pointing at a replica) and wherever default_transaction_read_only is on.
READ_ONLY = "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')::bool"


class ReplicaHealth(BaseModel):
    serving_reads: bool = Field(description="Whether crew reads go to DATABASE_READ_URL now")
    lag_seconds: float | None = Field(description="Replica lag last measured; null: no answer")
    problem: str | None = Field(description="Why crew reads fall back to the primary, if so")


class Health(BaseModel):
    model_config = ALWAYS_SENT

    status: HealthStatus = Field(description="`ok`, or `unavailable` with the failing checks")
    checks: dict[str, bool] = Field(
        default={},
        description="Readiness checks: database, writable, migrations, recovery, and scheduler "
        "when INGEST_INTERVAL_SECONDS is set",
    )
    problems: list[str] = Field(default=[], description="Why each failing check fails")


Schedule = Literal["running", "paused"] | None


# Readiness adds what an operator should know that is not a failure.
class Readiness(Health):
    schedule: Schedule = Field(
        description="Scheduled runs: `paused` while POST /schedule/pause holds them (ready all "
        "the same); null when the database could not say"
    )
    replica: ReplicaHealth | None = Field(
        description="The read replica, null unless DATABASE_READ_URL is set; informative: a "
        "replica that lags or is down sends crew reads to the primary, it does not make this 503"
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
    """Database reachable and writable, migrations at head, start-up recovery done, scheduler
    ticking; and whether the schedule is paused."""
    checks = {"database": False, "writable": False, "migrations": False, "recovery": False}
    problems: list[str] = []
    schedule: Schedule = None
    try:
        with probe_engine().connect() as connection:  # one connection for every check
            in_recovery, read_only = connection.execute(text(READ_ONLY)).one()
            checks["database"] = True
            checks["writable"] = not (in_recovery or read_only)
            checks["migrations"] = schema_is_current(connection)
            if checks["migrations"]:
                schedule = "paused" if schedule_state.is_paused(connection) else "running"
        if not checks["writable"]:
            why = "a standby in recovery" if in_recovery else "default_transaction_read_only"
            problems.append(f"database is read-only ({why}): runs cannot be recorded")
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


def replica_health() -> ReplicaHealth | None:
    if not db_routing.replica_configured():
        return None
    db_routing.ensure_monitor()
    state = db_routing.replica_state()
    return ReplicaHealth(
        serving_reads=state.serves_reads(), lag_seconds=state.lag_seconds, problem=state.problem
    )


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
        replica=replica_health(),
    )
    status = 200 if health.status == HealthStatus.ok else 503
    return JSONResponse(health.model_dump(mode="json"), status_code=status)  # type: ignore[return-value]
