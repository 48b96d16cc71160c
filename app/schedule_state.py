"""Whether the schedule is paused: one row in the database, so every replica obeys at once.

Pausing and resuming write their webhook event to the outbox in the same transaction as the
change (app/notify delivers it). Manual runs (`POST /ingest`, `crew-etl ingest`) are not held.
"""

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from pydantic import Field as PydanticField
from sqlalchemy import Connection, Engine, Text
from sqlmodel import Field, SQLModel

from app.config import settings
from app.models import timestamp


# The schedule's state (one row, created by migration 0013).
class ScheduleState(SQLModel, table=True):
    __tablename__ = "schedule_state"

    id: bool = Field(default=True, primary_key=True)
    paused: bool = False
    reason: str | None = Field(default=None, sa_type=Text)
    changed_at: datetime | None = timestamp()


# What the API and the CLI show of the schedule.
class SchedulePublic(BaseModel):
    paused: bool = PydanticField(description="True while scheduled runs are held")
    reason: str | None = PydanticField(description="What the pause or resume gave as its reason")
    changed_at: datetime | None = PydanticField(
        description="When it was last paused or resumed; null if never"
    )
    interval_seconds: float = PydanticField(
        description="INGEST_INTERVAL_SECONDS of this process; 0: no schedule configured"
    )


READ = "SELECT paused, reason, changed_at FROM schedule_state"
# Only a real change writes and is announced: pausing a paused schedule changes nothing.
# `clock_timestamp()`: the time of the change itself, not of the transaction's start.
CHANGE = """
UPDATE schedule_state SET paused = %(paused)s, reason = %(reason)s, changed_at = clock_timestamp()
WHERE paused <> %(paused)s
RETURNING paused, reason, changed_at
"""
# The event, in the change's own transaction; its payload says what pausing suppresses.
ANNOUNCE = """
INSERT INTO webhook_outbox (kind, data) VALUES (%(kind)s, %(data)s::jsonb)
"""


def public(row: Any) -> SchedulePublic:
    return SchedulePublic(
        paused=row.paused,
        reason=row.reason,
        changed_at=row.changed_at,
        interval_seconds=settings.INGEST_INTERVAL_SECONDS,
    )


def read(connection: Connection) -> SchedulePublic:
    return public(connection.exec_driver_sql(READ).one())


def is_paused(connection: Connection) -> bool:
    return bool(connection.exec_driver_sql(READ).one().paused)


def change(engine: Engine, paused: bool, reason: str | None) -> tuple[SchedulePublic, bool]:
    """Pause or resume; returns the state and whether it changed (and an event was queued)."""
    with engine.begin() as connection:
        row = connection.exec_driver_sql(CHANGE, {"paused": paused, "reason": reason}).first()
        if row is None:
            return read(connection), False
        state = public(row)
        kind = "ingest.schedule.paused" if paused else "ingest.schedule.resumed"
        data = {**state.model_dump(mode="json"), "freshness_stale_suppressed": paused}
        connection.exec_driver_sql(ANNOUNCE, {"kind": kind, "data": json.dumps(data)})
        return state, True
