"""One HTTP attempt at one receiver, signed by the Standard Webhooks specification. No SQL here.

Redirects are not followed (a receiver that moved must be reconfigured, never guessed), the
secret never leaves this module except as the signature, and the receiver's answer is read only
as far as an error message needs.
"""

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from standardwebhooks.webhooks import Webhook

from app.config import settings

ANSWER_CHARS = 200  # of a receiver's body kept in an attempt's error
USER_AGENT = "crew-etl-webhooks/1"


@dataclass(frozen=True)
class Answer:
    status: int | None  # the receiver's HTTP status; None: no answer (timeout, refused, ...)
    latency_ms: float
    error: str | None  # None when delivered
    retry_after: float | None = None  # seconds the receiver asked us to wait
    body: str = ""
    final: bool = False  # no retry can help (the URL is no longer configured)

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        return self.status == 410


def url_key(url: str) -> str:
    """What a delivery stores of its receiver: the URL with the secret and format it was
    configured with, hashed. Changing any of them is a new receiver (a 410 no longer holds)."""
    material = f"{url}\n{settings.WEBHOOK_SECRET or ''}\n{settings.WEBHOOK_FORMAT}"
    return hashlib.sha256(material.encode()).hexdigest()


def redacted(url: str) -> str:
    """The receiver fit to show: scheme, host and port; the path and query may hold a token."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<unparseable URL>"
    port = f":{parsed.port}" if parsed.port else ""
    hidden = "/***" if parsed.raw_path not in (b"", b"/") else "/"
    return f"{parsed.scheme}://{parsed.host}{port}{hidden}"


def signed_headers(msg_id: str, body: bytes, secret: str | None) -> dict[str, str]:
    """webhook-id, webhook-timestamp (now: each attempt is signed afresh) and
    webhook-signature; unsigned without a secret (Slack's incoming webhooks take none)."""
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
    }
    if secret:
        headers["webhook-signature"] = Webhook(secret).sign(msg_id, now, body)
    return headers


def make_client(timeout_seconds: float) -> httpx.Client:
    return httpx.Client(timeout=timeout_seconds, follow_redirects=False, trust_env=False)


def send(client: httpx.Client, url: str, msg_id: str, body: bytes) -> Answer:
    """POST the body; any answer but 2xx, and no answer, is a failed attempt."""
    headers = signed_headers(msg_id, body, settings.WEBHOOK_SECRET)
    started = time.monotonic()
    try:
        with client.stream("POST", url, content=body, headers=headers) as response:
            text = next(response.iter_text(ANSWER_CHARS), "")[:ANSWER_CHARS]
    except httpx.TimeoutException:
        return Answer(None, elapsed_ms(started), "timed out: no answer within the timeout")
    except httpx.HTTPError as exc:
        return Answer(None, elapsed_ms(started), f"{type(exc).__name__}: {exc}"[:ANSWER_CHARS])
    latency = elapsed_ms(started)
    if 200 <= response.status_code < 300:
        return Answer(response.status_code, latency, None, body=text)
    error = f"HTTP {response.status_code}"
    if response.is_redirect:
        error += " (redirects are not followed: configure the URL it points to)"
    elif text:
        error += f": {text}"
    wait = retry_after(response.headers.get("retry-after"))
    return Answer(response.status_code, latency, error, wait, body=text)


def elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def retry_after(value: str | None) -> float | None:
    """Retry-After as seconds or as an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None
