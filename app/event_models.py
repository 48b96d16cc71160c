"""A run's events, as a client following it live reads them (`GET /ingest/{id}/events`): a
table written only by the database's triggers on `ingest_runs` (migration 0014), and the
payload each kind carries."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.models import timestamp


class RunEventKind(StrEnum):
    queued = "queued"
    started = "started"
    page = "page"  # a page loaded: its number and the record counts so far
    cancelled = "cancelled"
    ended = "ended"  # succeeded or failed: the status, error and every count


# One event of one run, numbered 1, 2, 3... per run in the order the run's record changed.
class IngestRunEvent(SQLModel, table=True):
    __tablename__ = "ingest_run_events"

    run_id: int = Field(foreign_key="ingest_runs.id", ondelete="CASCADE", primary_key=True)
    seq: int = Field(primary_key=True)
    kind: str = Field(sa_type=Text)
    data: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime | None = timestamp(nullable=False, server_default=func.now())
