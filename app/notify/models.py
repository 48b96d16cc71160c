"""Webhook outbox, deliveries and attempts, as tables and API schemas (migration 0013).

The tables are written with named SQL (app/notify/outbox.py); these classes keep the models and
the migrations in step and give the API its shapes.
"""

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from pydantic import Field as PydanticField
from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.models import timestamp


class DeliveryStatus(StrEnum):
    pending = "pending"  # waiting for its next attempt (or being sent)
    delivered = "delivered"  # the receiver answered 2xx
    failed = "failed"  # every attempt of the retry schedule failed, or the URL was removed
    gone = "gone"  # the receiver answered 410 Gone: nothing more is sent to it


def bigint_id() -> Any:
    return Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )


# Something that happened and must be told, written in the transaction of the fact itself.
class WebhookOutbox(SQLModel, table=True):
    __tablename__ = "webhook_outbox"
    __table_args__ = (
        Index("ix_webhook_outbox_waiting", "id", postgresql_where=text("fanned_out_at IS NULL")),
    )

    id: int | None = bigint_id()
    kind: str = Field(sa_type=Text)
    run_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("ingest_runs.id", ondelete="CASCADE")),
    )
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    created_at: datetime | None = timestamp(nullable=False)
    fanned_out_at: datetime | None = timestamp()


# One event for one receiver; `msg_id` is the webhook-id of each of its attempts.
class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_webhook_deliveries_status_id", "status", "id"),
    )

    id: int | None = bigint_id()
    outbox_id: int = Field(
        sa_column=Column(
            BigInteger, ForeignKey("webhook_outbox.id", ondelete="CASCADE"), nullable=False
        )
    )
    msg_id: str = Field(sa_type=Text, unique=True)
    event_type: str = Field(sa_type=Text)
    payload: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    url_key: str = Field(sa_type=Text)
    url_redacted: str = Field(sa_type=Text)
    status: str = Field(sa_type=Text)
    attempts: int = 0
    retry_base: int = 0
    next_attempt_at: datetime | None = timestamp(nullable=False)
    claimed_by: int | None = Field(default=None, sa_type=BigInteger)
    claimed_until: datetime | None = timestamp()
    last_status: int | None = None
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime | None = timestamp(nullable=False)
    finished_at: datetime | None = timestamp()


# One attempt: recorded when claimed, completed with the receiver's answer.
class WebhookAttempt(SQLModel, table=True):
    __tablename__ = "webhook_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "attempt"),)

    id: int | None = bigint_id()
    delivery_id: int = Field(
        sa_column=Column(
            BigInteger, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False
        )
    )
    attempt: int
    started_at: datetime | None = timestamp(nullable=False)
    url_redacted: str = Field(sa_type=Text)
    response_status: int | None = None
    latency_ms: float | None = None
    error: str | None = Field(default=None, sa_type=Text)


# Receivers that answered 410 Gone.
class WebhookGoneUrl(SQLModel, table=True):
    __tablename__ = "webhook_gone_urls"

    url_key: str = Field(sa_type=Text, primary_key=True)
    url_redacted: str = Field(sa_type=Text)
    gone_at: datetime | None = timestamp(nullable=False)


# Whether the current stale period was announced (one row).
class WebhookFreshness(SQLModel, table=True):
    __tablename__ = "webhook_freshness"

    id: bool = Field(default=True, primary_key=True)
    stale_announced_at: datetime | None = timestamp()


# What the API returns for one attempt.
class AttemptPublic(BaseModel):
    attempt: int = PydanticField(description="1 for the first attempt, counting up")
    started_at: datetime = PydanticField(description="When it was sent")
    url: str = PydanticField(description="The receiver, its path and query hidden")
    response_status: int | None = PydanticField(
        description="The receiver's HTTP status; null on a timeout or a connection error"
    )
    latency_ms: float | None = PydanticField(description="Until the answer; null while in flight")
    error: str | None = PydanticField(description="Why the attempt failed; null when it did not")


# What the API returns for one delivery, with every attempt.
class DeliveryPublic(BaseModel):
    id: int = PydanticField(description="Delivery id")
    msg_id: str = PydanticField(description="The webhook-id header of every attempt")
    event_type: str = PydanticField(description="The event, e.g. `ingest.run.failed`")
    run_id: int | None = PydanticField(description="The run the event is about, if any")
    url: str = PydanticField(description="The receiver, its path and query hidden")
    status: DeliveryStatus = PydanticField(description="Where the delivery is")
    attempts: list[AttemptPublic] = PydanticField(description="Every attempt, oldest first")
    next_attempt_at: datetime | None = PydanticField(
        description="When the next attempt is due; null once the delivery has ended"
    )
    created_at: datetime = PydanticField(description="When the event was queued")
    finished_at: datetime | None = PydanticField(description="When it ended; null while pending")
