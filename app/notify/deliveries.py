"""Deliveries as the API and the status page show them, and redelivery by hand. No HTTP here."""

from typing import Any

from sqlalchemy import Connection

from app.notify.models import AttemptPublic, DeliveryPublic, DeliveryStatus

# Newest first from the primary key, or from (status, id) when filtered.
COUNT = (
    "SELECT count(*) FROM webhook_deliveries WHERE %(status)s::text IS NULL OR status = %(status)s"
)
DELIVERIES = """
SELECT d.id, d.msg_id, d.event_type, o.run_id, d.url_redacted AS url, d.status,
    CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at,
    d.created_at, d.finished_at
FROM webhook_deliveries d JOIN webhook_outbox o ON o.id = d.outbox_id
"""
PAGE = (
    DELIVERIES + "WHERE %(status)s::text IS NULL OR d.status = %(status)s "
    "ORDER BY d.id DESC LIMIT %(limit)s OFFSET %(offset)s"
)
ONE = DELIVERIES + "WHERE d.id = %(id)s"
ATTEMPTS = """
SELECT delivery_id, attempt, started_at, url_redacted AS url, response_status, latency_ms, error
FROM webhook_attempts WHERE delivery_id = ANY(%(ids)s) ORDER BY delivery_id, attempt
"""
# A delivery that ended goes back to the queue, due now, with the retry schedule from its
# start; its receiver, if it had answered 410, is tried again. A pending one is left alone.
REDELIVER = """
WITH again AS (
    UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = clock_timestamp(),
        retry_base = attempts, finished_at = NULL, claimed_by = NULL, claimed_until = NULL
    WHERE id = %(id)s AND status <> 'pending'
    RETURNING url_key
)
DELETE FROM webhook_gone_urls WHERE url_key IN (SELECT url_key FROM again)
"""
STATUS_OF = "SELECT status FROM webhook_deliveries WHERE id = %(id)s"


class StillPending(Exception):
    """The delivery has not ended: it will be attempted again without being asked."""


def page(
    connection: Connection, status: DeliveryStatus | None, limit: int, offset: int
) -> tuple[list[DeliveryPublic], int]:
    params: dict[str, Any] = {"status": status and str(status), "limit": limit, "offset": offset}
    total = connection.exec_driver_sql(COUNT, params).scalar_one()
    rows = connection.exec_driver_sql(PAGE, params).mappings().all()
    return with_attempts(connection, rows), total


def one(connection: Connection, delivery_id: int) -> DeliveryPublic | None:
    """One delivery with its attempts, or None."""
    rows = connection.exec_driver_sql(ONE, {"id": delivery_id}).mappings().all()
    found = with_attempts(connection, rows)
    return found[0] if found else None


def with_attempts(connection: Connection, rows: Any) -> list[DeliveryPublic]:
    attempts: dict[int, list[AttemptPublic]] = {row["id"]: [] for row in rows}
    found = connection.exec_driver_sql(ATTEMPTS, {"ids": list(attempts)}).mappings()
    for attempt in found:
        attempts[attempt["delivery_id"]].append(AttemptPublic.model_validate(dict(attempt)))
    return [DeliveryPublic(**row, attempts=attempts[row["id"]]) for row in rows]


def redeliver(connection: Connection, delivery_id: int) -> DeliveryPublic | None:
    """Queue an ended delivery again (same webhook-id); None if there is no such delivery."""
    status = connection.exec_driver_sql(STATUS_OF, {"id": delivery_id}).scalar()
    if status is None:
        return None
    if status == DeliveryStatus.pending:
        raise StillPending(f"delivery {delivery_id} is still pending; it is retried on its own")
    connection.exec_driver_sql(REDELIVER, {"id": delivery_id})
    return one(connection, delivery_id)
