"""What the status page shows of webhooks and the schedule: the last deliveries and how they
went, counts of those not delivered, and whether the schedule is paused. No HTTP here."""

from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import Connection, text

LAST_DELIVERIES = 10

# The newest deliveries (primary key, backwards) with their latest answer.
LAST_DELIVERIES_SQL = text(
    """
    SELECT id, event_type, url_redacted AS url, status, attempts, last_status,
           left(last_error, 300) AS last_error, created_at
    FROM webhook_deliveries ORDER BY id DESC LIMIT :limit
    """
)
# Deliveries that have not reached their receiver, per status; from (status, id).
NOT_DELIVERED_SQL = text(
    """
    SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'gone') AS gone
    FROM webhook_deliveries WHERE status <> 'delivered'
    """
)
SCHEDULE_SQL = text("SELECT paused, reason, changed_at FROM schedule_state")


# One delivery as the page lists it.
class DeliverySummary(BaseModel):
    id: int = Field(description="Delivery id")
    event_type: str = Field(description="The event sent")
    url: str = Field(description="The receiver, its path and query hidden")
    status: str = Field(description="pending, delivered, failed or gone")
    attempts: int = Field(description="Attempts made so far")
    last_status: int | None = Field(description="The receiver's last HTTP status, if any")
    last_error: str | None = Field(description="Why the last attempt failed, if it did")
    created_at: datetime = Field(description="When the event was queued")


class WebhookHealth(BaseModel):
    receivers: int = Field(description="Receivers configured (WEBHOOK_URL)")
    pending: int = Field(description="Deliveries waiting for an attempt")
    failed: int = Field(description="Deliveries given up after every retry")
    gone: int = Field(description="Deliveries ended by a 410 Gone")
    last: list[DeliverySummary] = Field(description="The newest deliveries, newest first")


class ScheduleSummary(BaseModel):
    paused: bool = Field(description="True while scheduled runs are held")
    reason: str | None = Field(description="Why, as given when it was paused or resumed")
    changed_at: datetime | None = Field(description="When it was last paused or resumed")


def read_webhooks(connection: Connection, receivers: int) -> WebhookHealth:
    counts = connection.execute(NOT_DELIVERED_SQL).one()
    rows = connection.execute(LAST_DELIVERIES_SQL, {"limit": LAST_DELIVERIES})
    last = [DeliverySummary.model_validate(row._mapping) for row in rows]
    return WebhookHealth(
        receivers=receivers,
        pending=counts.pending,
        failed=counts.failed,
        gone=counts.gone,
        last=last,
    )


def read_schedule(connection: Connection) -> ScheduleSummary:
    return ScheduleSummary.model_validate(connection.execute(SCHEDULE_SQL).one()._mapping)
