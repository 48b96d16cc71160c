"""Scheduled ingest: one run per interval across all replicas, aligned to wall-clock slots.

Each interval is numbered (`unix time // interval`); the run stores that number in a unique
column, so however many replicas tick, only the first insert of a slot wins.
"""

import asyncio
import time

import structlog
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from app.db import get_engine
from app.ingest import service
from app.models import RunTrigger

log = structlog.get_logger("crew_etl.scheduler")


def trigger_scheduled_run(slot: int) -> int | None:
    """Create and execute the run of `slot`; skip quietly if a run is active or the slot taken."""
    with Session(get_engine()) as session:
        try:
            run = service.create_run(session, RunTrigger.schedule, schedule_slot=slot)
        except service.RunConflict:
            log.debug("scheduled tick skipped", slot=slot)
            return None
    assert run.id is not None
    service.execute_run(run.id)
    return run.id


async def run_schedule(interval_seconds: float) -> None:
    while True:
        now = time.time()
        slot = int(now // interval_seconds) + 1
        await asyncio.sleep(slot * interval_seconds - now)
        await run_in_threadpool(trigger_scheduled_run, slot)
