"""The outbox and its deliveries in SQL: fan out, claim, record, give up, announce staleness.

Exactly-once attempts across replicas: an attempt is claimed (its number counted and its row
written, the delivery leased to this process) and committed before it is sent, with
`FOR UPDATE SKIP LOCKED` so two processes never claim the same delivery; the answer is recorded
afterwards. A process that dies between the two leaves a lease that runs out, and the next
attempt (same webhook-id) is claimed by whoever comes next. No HTTP here.
"""

import secrets
from typing import Any

from sqlalchemy import Connection

from app.notify import events
from app.notify.sender import redacted, url_key

# The oldest outbox rows not yet turned into deliveries; a row another process is fanning out
# is skipped, not waited for.
WAITING = """
SELECT id, kind, run_id, data, created_at FROM webhook_outbox
WHERE fanned_out_at IS NULL ORDER BY id LIMIT 20 FOR UPDATE SKIP LOCKED
"""
RUN = "SELECT * FROM ingest_runs WHERE id = %(id)s"
# The schema drift of the newest successful run before this one, to tell what is new.
PREVIOUS_DRIFT = """
SELECT schema_drift FROM ingest_runs
WHERE status = 'succeeded' AND NOT dry_run AND id < %(id)s ORDER BY id DESC LIMIT 1
"""
INSERT_DELIVERY = """
INSERT INTO webhook_deliveries (outbox_id, msg_id, event_type, payload, url_key, url_redacted)
VALUES (%(outbox_id)s, %(msg_id)s, %(type)s, %(payload)s::jsonb, %(url_key)s, %(url)s)
"""
FANNED_OUT = "UPDATE webhook_outbox SET fanned_out_at = clock_timestamp() WHERE id = %(id)s"

# Deliveries to a receiver that answered 410 end without another attempt.
END_GONE = """
UPDATE webhook_deliveries SET status = 'gone', finished_at = clock_timestamp(),
    claimed_by = NULL, claimed_until = NULL
WHERE status = 'pending' AND url_key IN (SELECT url_key FROM webhook_gone_urls)
"""
# Due deliveries whose lease (if any) ran out, oldest first; each attempt counted as it is
# claimed, so an attempt number is never used twice.
CLAIM = """
WITH due AS (
    SELECT id FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()
      AND (claimed_until IS NULL OR claimed_until < clock_timestamp())
    ORDER BY next_attempt_at, id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d SET attempts = d.attempts + 1, claimed_by = %(owner)s,
    claimed_until = clock_timestamp() + make_interval(secs => %(lease)s)
FROM due WHERE d.id = due.id
RETURNING d.id, d.msg_id, d.event_type, d.payload, d.url_key, d.url_redacted, d.attempts,
    d.retry_base
"""
# An earlier attempt whose process never recorded an answer says so.
UNANSWERED = """
UPDATE webhook_attempts SET error = 'no answer recorded: the sending process stopped or lost '
    || 'the database; sent again with the same webhook-id'
WHERE delivery_id = %(id)s AND attempt < %(attempt)s AND latency_ms IS NULL AND error IS NULL
"""
INSERT_ATTEMPT = """
INSERT INTO webhook_attempts (delivery_id, attempt, url_redacted)
VALUES (%(id)s, %(attempt)s, %(url)s)
"""
ANSWERED = """
UPDATE webhook_attempts SET response_status = %(status)s, latency_ms = %(latency)s,
    error = %(error)s
WHERE delivery_id = %(id)s AND attempt = %(attempt)s
"""
# Delivered whichever attempt got through, even one whose lease ran out meanwhile.
DELIVERED = """
UPDATE webhook_deliveries SET status = 'delivered', finished_at = clock_timestamp(),
    last_status = %(status)s, last_error = NULL, claimed_by = NULL, claimed_until = NULL
WHERE id = %(id)s AND status = 'pending'
"""
# A failed attempt schedules the next, or ends the delivery; only while it is still the
# delivery's latest attempt.
RETRY = """
UPDATE webhook_deliveries SET next_attempt_at = clock_timestamp() + make_interval(secs => %(wait)s),
    last_status = %(status)s, last_error = %(error)s, claimed_by = NULL, claimed_until = NULL
WHERE id = %(id)s AND status = 'pending' AND attempts = %(attempt)s
"""
END = """
UPDATE webhook_deliveries SET status = %(end)s, finished_at = clock_timestamp(),
    last_status = %(status)s, last_error = %(error)s, claimed_by = NULL, claimed_until = NULL
WHERE id = %(id)s AND status = 'pending' AND attempts = %(attempt)s
"""
QUEUE_EVENT = "INSERT INTO webhook_outbox (kind, data) VALUES (%(kind)s, %(data)s::jsonb)"
GONE = """
INSERT INTO webhook_gone_urls (url_key, url_redacted) VALUES (%(url_key)s, %(url)s)
ON CONFLICT DO NOTHING
"""


def fan_out(connection: Connection, urls: list[str], wanted: list[str], base: str | None) -> int:
    """Turn waiting outbox rows into deliveries: one per wanted event and receiver. Returns
    the number of rows handled. Without receivers the rows are marked and nothing is queued."""
    rows = connection.exec_driver_sql(WAITING).mappings().all()
    for row in rows:
        for event_type, data in row_events(connection, row, base):
            if event_type not in wanted:
                continue
            body = events.dumps(events.envelope(event_type, row["created_at"], data))
            for url in urls:
                params = {
                    "outbox_id": row["id"],
                    "msg_id": new_msg_id(),
                    "type": event_type,
                    "payload": body,
                    "url_key": url_key(url),
                    "url": redacted(url),
                }
                connection.exec_driver_sql(INSERT_DELIVERY, params)
        connection.exec_driver_sql(FANNED_OUT, {"id": row["id"]})
    return len(rows)


def row_events(
    connection: Connection, row: Any, base: str | None
) -> list[tuple[str, dict[str, Any]]]:
    if row["kind"] != "run.ended":
        return [(row["kind"], row["data"])]
    run = connection.exec_driver_sql(RUN, {"id": row["run_id"]}).mappings().one()
    previous = connection.exec_driver_sql(PREVIOUS_DRIFT, {"id": row["run_id"]}).scalar()
    return events.run_events(dict(run), previous, base)


def new_msg_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


def claim(connection: Connection, owner: int, limit: int, lease: float) -> list[dict[str, Any]]:
    """Claim up to `limit` due deliveries for one attempt each; commit before sending."""
    connection.exec_driver_sql(END_GONE)
    params = {"limit": limit, "owner": owner, "lease": lease}
    claimed = [dict(row) for row in connection.exec_driver_sql(CLAIM, params).mappings()]
    for delivery in claimed:
        ids = {"id": delivery["id"], "attempt": delivery["attempts"]}
        connection.exec_driver_sql(UNANSWERED, ids)
        connection.exec_driver_sql(INSERT_ATTEMPT, {**ids, "url": delivery["url_redacted"]})
    return claimed


def record(
    connection: Connection, delivery: dict[str, Any], answer: Any, wait: float | None
) -> str:
    """Record an attempt's answer; `wait` is the time until the next attempt, None when the
    retry schedule is exhausted. Returns the delivery's status after it."""
    params = {
        "id": delivery["id"],
        "attempt": delivery["attempts"],
        "status": answer.status,
        "latency": answer.latency_ms,
        "error": answer.error,
    }
    connection.exec_driver_sql(ANSWERED, params)
    if answer.delivered:
        connection.exec_driver_sql(DELIVERED, params)
        return "delivered"
    if answer.gone:
        connection.exec_driver_sql(
            GONE, {"url_key": delivery["url_key"], "url": delivery["url_redacted"]}
        )
        connection.exec_driver_sql(END, {**params, "end": "gone"})
        return "gone"
    if wait is None:
        connection.exec_driver_sql(END, {**params, "end": "failed"})
        return "failed"
    connection.exec_driver_sql(RETRY, {**params, "wait": wait})
    return "pending"


def queue_event(connection: Connection, kind: str, data: dict[str, Any]) -> None:
    """Queue an event that is about no run (freshness), in the caller's transaction."""
    connection.exec_driver_sql(QUEUE_EVENT, {"kind": kind, "data": events.dumps(data)})
