"""One delivery worker per process: a thread that fans the outbox out, claims due deliveries and
sends them on a few threads of its own, and looks at freshness every few seconds.

It has its own small pool of database connections and its own threads: a receiver that hangs
for the whole timeout, or a database that is away, holds up neither runs nor API reads. A
database error only delays: everything it would have done is still in the tables next time.
"""

import functools
import random
import secrets
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.config import settings
from app.db import make_engine
from app.notify import events, freshness, outbox, sender
from app.notify import metrics as notify_metrics

log = structlog.get_logger("crew_etl.webhooks")

OWNER_ID = secrets.randbits(62)  # this process, in a delivery's lease
LEASE_MARGIN_SECONDS = 30  # beyond the send timeout, before another process may try again
FRESHNESS_EVERY_SECONDS = 5.0
DATABASE_ERRORS = (DBAPIError, PoolTimeout)


@functools.cache
def engine() -> Engine:
    """Connections of the worker's own: the API's and the runs' pools are never waited on."""
    return make_engine(settings.WEBHOOK_CONCURRENCY + 1, 1, statement_timeout=10)


def next_wait(delivery: dict[str, Any], answer: sender.Answer) -> float | None:
    """Seconds until the next attempt from the retry schedule (with up to 10% jitter, and no
    sooner than the receiver's Retry-After), or None when the schedule is exhausted."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE_SECONDS
    failed_so_far: int = delivery["attempts"] - delivery["retry_base"]
    if failed_so_far > len(schedule):
        return None
    wait: float = schedule[failed_so_far - 1] * random.uniform(1.0, 1.1)
    if answer.retry_after is not None:
        wait = max(wait, min(answer.retry_after, max(schedule)))
    return wait


class DeliveryWorker:
    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sending: set[Future[None]] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._client: httpx.Client | None = None
        self._next_freshness = 0.0

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._sending, self._next_freshness = set(), 0.0
        self._pool = ThreadPoolExecutor(settings.WEBHOOK_CONCURRENCY, "webhook-send")
        self._client = sender.make_client(settings.WEBHOOK_TIMEOUT_SECONDS)
        self._thread = threading.Thread(target=self._loop, name="webhook-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop claiming; attempts in flight are not waited for (their leases run out and the
        next attempt, with the same webhook-id, is made by whichever process comes next)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        # While the database is away: up to 5 s between tries, not a log line every poll.
        backoff = 0.0
        while not self._stopping.is_set():
            try:
                busy = self.tick()
                backoff = 0.0
            except DATABASE_ERRORS as exc:
                log.warning("webhook worker cannot reach the database", error=short(exc))
                busy, backoff = False, min(max(backoff * 2, 0.5), 5.0)
            except Exception:  # never let the loop die: events wait on it
                log.exception("webhook worker tick failed")
                busy = False
            if not busy:
                self._stopping.wait(max(settings.WEBHOOK_POLL_SECONDS, backoff))

    def tick(self) -> bool:
        """One round; True when there may be more to do at once."""
        if time.monotonic() >= self._next_freshness:
            self._next_freshness = time.monotonic() + FRESHNESS_EVERY_SECONDS
            with engine().begin() as connection:
                freshness.check(connection, settings.stale_after_seconds)
        with engine().begin() as connection:
            fanned = outbox.fan_out(
                connection, settings.WEBHOOK_URL, settings.WEBHOOK_EVENTS, settings.PUBLIC_BASE_URL
            )
        self._sending = {future for future in self._sending if not future.done()}
        free = settings.WEBHOOK_CONCURRENCY - len(self._sending)
        if free <= 0:
            return False
        lease = settings.WEBHOOK_TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS
        with engine().begin() as connection:
            claimed = outbox.claim(connection, OWNER_ID, free, lease)
        assert self._pool is not None
        for delivery in claimed:
            self._sending.add(self._pool.submit(self._attempt, delivery))
        return bool(fanned or claimed)

    def _attempt(self, delivery: dict[str, Any]) -> None:
        try:
            answer = self.send(delivery)
            result = "delivered" if answer.delivered else "failed"
            notify_metrics.ATTEMPTS.labels(result=result).inc()
            self.record(delivery, answer)
        except Exception:
            log.exception("webhook attempt failed unexpectedly", delivery_id=delivery["id"])

    def send(self, delivery: dict[str, Any]) -> sender.Answer:
        urls = {sender.url_key(url): url for url in settings.WEBHOOK_URL}
        url = urls.get(delivery["url_key"])
        if url is None:
            error = "the URL is no longer configured (WEBHOOK_URL)"
            return sender.Answer(None, 0.0, error, final=True)
        body = delivery["payload"]
        if settings.WEBHOOK_FORMAT == "slack":
            body = events.slack_body(body)
        assert self._client is not None
        return sender.send(self._client, url, delivery["msg_id"], events.encode(body))

    def record(self, delivery: dict[str, Any], answer: sender.Answer) -> None:
        """Record the answer, retrying while the database is away: an answer lost here means
        the receiver gets the event again (same webhook-id) after the lease runs out."""
        wait = None if answer.final else next_wait(delivery, answer)
        pause = 0.2
        while True:
            try:
                with engine().begin() as connection:
                    status = outbox.record(connection, delivery, answer, wait)
                break
            except DATABASE_ERRORS as exc:
                if self._stopping.is_set():
                    return
                log.warning("cannot record a webhook answer yet", error=short(exc))
                self._stopping.wait(pause)
                pause = min(pause * 2, 5.0)
        if status != "pending":
            notify_metrics.DELIVERIES_ENDED.labels(status=status).inc()
        log.info(
            "webhook attempt",
            delivery_id=delivery["id"],
            event_type=delivery["event_type"],
            attempt=delivery["attempts"],
            url=delivery["url_redacted"],
            status=answer.status,
            error=answer.error,
            delivery_status=status,
        )


def short(exc: Exception) -> str:
    return str(exc).split("\n")[0][:200]


worker = DeliveryWorker()
