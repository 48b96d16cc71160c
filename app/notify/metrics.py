"""Prometheus metrics of webhook delivery."""

from prometheus_client import Counter, Gauge

ATTEMPTS = Counter(
    "crew_etl_webhook_attempts_total",
    "Webhook delivery attempts by result: delivered (2xx) or failed (any other answer, none)",
    ["result"],
)
DELIVERIES_ENDED = Counter(
    "crew_etl_webhook_deliveries_ended_total",
    "Webhook deliveries that ended: delivered, failed (retries exhausted) or gone (410)",
    ["status"],
)
# Read from the database by every process: the newest value is the truth.
PENDING = Gauge(
    "crew_etl_webhook_deliveries_pending",
    "Webhook deliveries waiting for an attempt",
    multiprocess_mode="mostrecent",
)
OLDEST_PENDING_AGE = Gauge(
    "crew_etl_webhook_oldest_pending_age_seconds",
    "Age of the oldest webhook delivery still waiting; 0 when none waits",
    multiprocess_mode="mostrecent",
)

for result in ("delivered", "failed"):
    ATTEMPTS.labels(result=result)
for status in ("delivered", "failed", "gone"):
    DELIVERIES_ENDED.labels(status=status)
