"""Is the copy fresh? Announced once per stale period, and when it recovers; gauges refreshed.

Every process looks every few seconds; the one row of `webhook_freshness`, locked for the look,
makes the announcement happen once across replicas. While the schedule is paused no stale event
is sent (the pause event said so); one is sent after resuming if the data is still stale.
"""

from typing import Any

from sqlalchemy import Connection

from app import metrics
from app.notify import metrics as notify_metrics
from app.notify import outbox

LOCK_STATE = "SELECT stale_announced_at FROM webhook_freshness FOR UPDATE"
SET_ANNOUNCED = "UPDATE webhook_freshness SET stale_announced_at = %(at)s"
# The newest successful run that loaded (a dry run loads nothing), the first run ever (the
# clock of a copy never refreshed), failures since that success, and the pause; each served by
# the primary key or a one-row table.
LOOK = """
WITH last AS (
    SELECT id, finished_at FROM ingest_runs
    WHERE status = 'succeeded' AND NOT dry_run ORDER BY id DESC LIMIT 1
)
SELECT (SELECT id FROM last) AS run_id, (SELECT finished_at FROM last) AS last_success_at,
    (SELECT created_at FROM ingest_runs ORDER BY id LIMIT 1) AS first_run_at,
    (SELECT count(*) FROM ingest_runs WHERE status = 'failed' AND NOT dry_run
        AND id > coalesce((SELECT id FROM last), 0)) AS failures,
    (SELECT paused FROM schedule_state) AS paused,
    clock_timestamp() AS now
"""
PENDING = """
SELECT count(*) AS pending, coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)
    AS oldest_seconds
FROM webhook_deliveries WHERE status = 'pending'
"""


def check(connection: Connection, stale_after_seconds: float) -> str | None:
    """Announce a stale period or its end if due; refresh the gauges. Returns the event queued."""
    announced = connection.exec_driver_sql(LOCK_STATE).scalar_one()
    look = connection.exec_driver_sql(LOOK).mappings().one()
    refresh_gauges(connection, look, stale_after_seconds)
    since = look["last_success_at"] or look["first_run_at"]
    stale_for = (look["now"] - since).total_seconds() if since else 0.0
    stale = stale_for > stale_after_seconds
    if stale and announced is None and not look["paused"]:
        data = {
            "last_success_at": look["last_success_at"],
            "last_success_run_id": look["run_id"],
            "stale_after_seconds": stale_after_seconds,
            "stale_for_seconds": round(stale_for, 1),
        }
        return announce(connection, "ingest.freshness.stale", data, look["now"])
    if not stale and announced is not None:
        data = {
            "run_id": look["run_id"],
            "last_success_at": look["last_success_at"],
            "stale_since": announced,
        }
        return announce(connection, "ingest.freshness.recovered", data, None)
    return None


def announce(connection: Connection, kind: str, data: dict[str, Any], at: Any) -> str:
    outbox.queue_event(connection, kind, data)
    connection.exec_driver_sql(SET_ANNOUNCED, {"at": at})
    return kind


def refresh_gauges(connection: Connection, look: Any, stale_after_seconds: float) -> None:
    """Every process exports the truth from the database, whichever process ran the runs (and
    after a restart, before its first run)."""
    metrics.STALE_AFTER.set(stale_after_seconds)
    if look["last_success_at"] is not None:
        metrics.LAST_SUCCESS.set(look["last_success_at"].timestamp())
    metrics.CONSECUTIVE_FAILURES.set(look["failures"])
    metrics.SCHEDULE_PAUSED.set(1 if look["paused"] else 0)
    pending = connection.exec_driver_sql(PENDING).mappings().one()
    notify_metrics.PENDING.set(pending["pending"])
    notify_metrics.OLDEST_PENDING_AGE.set(float(pending["oldest_seconds"]))
