"""The schedule: read it, pause it, resume it. The state is in the database: every replica
obeys at once."""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.api.deps import ReadConnectionDep, WriteAccess
from app.api.responses import DATABASE_DOWN, UNAUTHORIZED
from app.db import get_engine
from app.models import PRINTABLE
from app.schedule_state import SchedulePublic, change, read

router = APIRouter(prefix="/schedule", tags=["schedule"])

Reason = Annotated[
    str | None,
    Query(
        max_length=500,
        pattern=PRINTABLE,
        description="Why; shown on the status page and in events",
    ),
]
WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {**UNAUTHORIZED, **DATABASE_DOWN}


@router.get(
    "",
    operation_id="get_schedule",
    summary="The schedule's state",
    response_description="Paused or not, since when, and the interval",
    responses=DATABASE_DOWN,
)
def read_schedule(connection: ReadConnectionDep) -> SchedulePublic:
    """Whether scheduled runs are paused; manual runs are never held."""
    return read(connection)


@router.post(
    "/pause",
    operation_id="pause_schedule",
    summary="Pause scheduled runs",
    response_description="The schedule, paused",
    dependencies=[WriteAccess],
    responses=WRITE_RESPONSES,
)
def pause_schedule(reason: Reason = None) -> SchedulePublic:
    """Hold scheduled runs on every replica until resumed (a run in progress goes on); sends
    `ingest.schedule.paused` and no `ingest.freshness.stale` while paused. Pausing a paused
    schedule changes nothing."""
    return change(get_engine(), paused=True, reason=reason)[0]


@router.post(
    "/resume",
    operation_id="resume_schedule",
    summary="Resume scheduled runs",
    response_description="The schedule, running",
    dependencies=[WriteAccess],
    responses=WRITE_RESPONSES,
)
def resume_schedule(reason: Reason = None) -> SchedulePublic:
    """Let scheduled runs start again at the next slot; sends `ingest.schedule.resumed`."""
    return change(get_engine(), paused=False, reason=reason)[0]
