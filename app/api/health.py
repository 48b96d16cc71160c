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

from app import db_routing
from app.db import probe_engine, schema_is_current
from app.scheduler import state as scheduler_state

router = APIRouter(tags=["health"])

READY_DEADLINE_SECONDS = 1.5


# Writes are refused on a standby (in recovery: a failover not finished, or DATABASE_URL
# pointing at a replica) and wherever default_transaction_read_only is on.
READ_ONLY = "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')::bool"


class ReplicaHealth(BaseModel):
    serving_reads: bool = Field(description="Whether crew reads go to DATABASE_READ_URL now")
    lag_seconds: float | None = Field(description="Replica lag last measured; null: no answer")
    problem: str | None = Field(description="Why crew reads fall back to the primary, if so")


class Health(BaseModel):
    status: str = Field(description="`ok`, or `unavailable` with the failing checks")
    checks: dict[str, bool] = Field(
        default={},
        description="Readiness checks: database, writable, migrations, recovery, and scheduler "
        "when INGEST_INTERVAL_SECONDS is set",
    )
    problems: list[str] = Field(default=[], description="Why each failing check fails")
    replica: ReplicaHealth | None = Field(
        default=None,
        description="The read replica, when DATABASE_READ_URL is set; informative: a replica "
        "that lags or is down sends crew reads to the primary, it does not make this 503",
    )


@router.get(
    "/healthz",
    summary="Liveness",
    response_description="The process is up",
    response_model_exclude_none=True,
)
async def read_health() -> Health:
    """The process is up and serving requests (no database, no worker thread involved)."""
    return Health(status="ok")


def readiness(app: FastAPI) -> tuple[dict[str, bool], list[str]]:
    """Database reachable, migrations at head, start-up recovery done, scheduler ticking."""
    checks = {"database": False, "writable": False, "migrations": False, "recovery": False}
    problems: list[str] = []
    try:
        with probe_engine().connect() as connection:  # one connection for every check
            in_recovery, read_only = connection.execute(text(READ_ONLY)).one()
            checks["database"] = True
            checks["writable"] = not (in_recovery or read_only)
            checks["migrations"] = schema_is_current(connection)
        if not checks["writable"]:
            why = "a standby in recovery" if in_recovery else "default_transaction_read_only"
            problems.append(f"database is read-only ({why}): runs cannot be recorded")
        if not checks["migrations"]:
            problems.append("the schema is not at the newest migration")
    except Exception as exc:  # a down database is an answer here, not an error
        problems.append(f"database: {type(exc).__name__}")
    checks["recovery"] = bool(getattr(app.state, "recovered", False))
    if not checks["recovery"]:
        problems.append("start-up recovery has not finished")
    if scheduler_state.interval_seconds:
        problem = scheduler_state.problem()
        checks["scheduler"] = problem is None
        problems += [problem] if problem else []
    return checks, problems


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
        status="ok" if all(checks.values()) else "unavailable",
        checks=checks,
        problems=problems,
        replica=replica_health(),
    )
    # `replica` only when one is configured; null values inside it stay (a lag not measured)
    body = health.model_dump(exclude={"replica"} if health.replica is None else None)
    status = 200 if health.status == "ok" else 503
    return JSONResponse(body, status_code=status)  # type: ignore[return-value]
