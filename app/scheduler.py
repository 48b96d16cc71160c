"""Scheduled ingest: one run per interval across all replicas, aligned to wall-clock slots.

Each interval is numbered (`unix time // interval`); the run stores that number in a unique
column, so however many replicas tick, only the first insert of a slot wins. The loop survives
any error (a tick that fails is logged and the next one tried); `/readyz` reports it stuck when
no tick has got through for three intervals.
"""

import asyncio
import threading
import time
from dataclasses import dataclass

import structlog
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from app import metrics, schedule_state
from app.db import get_engine
from app.ingest import service
from app.models import RunTrigger

log = structlog.get_logger("crew_etl.scheduler")

TICKS_MISSED_BEFORE_UNREADY = 3


@dataclass
class SchedulerState:
    interval_seconds: float = 0
    since: float = 0.0  # time.monotonic() of the start, then of the last tick that got through
    last_error: str | None = None

    def problem(self) -> str | None:
        """Why the scheduler is not healthy, or None."""
        if not self.interval_seconds:
            return None
        quiet = time.monotonic() - self.since
        if quiet <= TICKS_MISSED_BEFORE_UNREADY * self.interval_seconds:
            return None
        cause = f"; last error: {self.last_error}" if self.last_error else ""
        return f"no scheduler tick got through for {quiet:.0f} s{cause}"


state = SchedulerState()


def trigger_scheduled_run(slot: int) -> int | None:
    """Create the run of `slot` and start it in a thread of its own (the loop keeps ticking
    meanwhile); skip quietly if the schedule is paused, a run is active or the slot taken."""
    with Session(get_engine()) as session:
        if schedule_state.is_paused(session.connection()):
            session.rollback()
            log.debug("scheduled tick skipped: the schedule is paused", slot=slot)
            return None
        try:
            run = service.create_run(session, RunTrigger.schedule, schedule_slot=slot)
        except service.RunConflict:
            log.debug("scheduled tick skipped", slot=slot)
            return None
    assert run.id is not None
    name = f"scheduled-run-{run.id}"
    threading.Thread(target=service.execute_run, args=(run.id,), name=name, daemon=True).start()
    return run.id


async def run_schedule(interval_seconds: float) -> None:
    state.interval_seconds, state.since = interval_seconds, time.monotonic()
    metrics.SCHEDULER_INTERVAL.set(interval_seconds)
    metrics.SCHEDULER_LAST_TICK.set(time.time())
    while True:
        now = time.time()
        slot = int(now // interval_seconds) + 1
        await asyncio.sleep(slot * interval_seconds - now)
        try:
            await run_in_threadpool(trigger_scheduled_run, slot)
        except Exception as exc:  # a database away, a bug: log it and tick again next interval
            state.last_error = (
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )
            log.exception("scheduled tick failed", slot=slot)
            continue
        state.since, state.last_error = time.monotonic(), None
        metrics.SCHEDULER_LAST_TICK.set(time.time())
