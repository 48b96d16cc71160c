"""Pages from the upstream `/v4/crew/query` endpoint, one at a time; no database here."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import stamina

from app.config import Settings

USER_AGENT = "crew-etl/0.1 (SpaceX crew ETL service)"
RETRYABLE_STATUS = {429, 500, 502, 503, 504}


class ExtractError(Exception):
    """A page could not be fetched or understood; the message names the page and the cause."""


class ResponseTooLarge(Exception):
    pass


class BadEnvelope(Exception):
    pass


@dataclass(frozen=True)
class FetchPolicy:
    page_size: int = 100
    max_pages: int = 10_000
    max_response_bytes: int = 50_000_000
    retries: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "FetchPolicy":
        return cls(
            page_size=settings.INGEST_PAGE_SIZE,
            max_pages=settings.INGEST_MAX_PAGES,
            max_response_bytes=settings.INGEST_MAX_RESPONSE_BYTES,
            retries=settings.HTTP_RETRIES,
            backoff_initial=settings.HTTP_BACKOFF_INITIAL_SECONDS,
            backoff_max=settings.HTTP_BACKOFF_MAX_SECONDS,
        )


@dataclass(frozen=True)
class Page:
    number: int
    records: list[Any]


def make_client(timeout_seconds: float) -> httpx.Client:
    return httpx.Client(timeout=timeout_seconds, headers={"User-Agent": USER_AGENT})


def crew_query_url(base_url: str) -> str:
    return f"{base_url.rstrip('/')}/v4/crew/query"


def iter_pages(client: httpx.Client, base_url: str, policy: FetchPolicy) -> Iterator[Page]:
    """Follow `nextPage` until `hasNextPage` is false, yielding each page's `docs`."""
    url = crew_query_url(base_url)
    number = 1
    for _ in range(policy.max_pages):
        envelope = fetch_page(client, url, number, policy)
        yield Page(number, envelope["docs"])
        if not envelope.get("hasNextPage"):
            return
        next_number = envelope.get("nextPage")
        if not isinstance(next_number, int) or next_number <= number:
            raise ExtractError(
                f"page {number}: pagination does not advance (nextPage={next_number!r})"
            )
        number = next_number
    raise ExtractError(
        f"page {number}: page cap reached, more than INGEST_MAX_PAGES={policy.max_pages} pages"
    )


def fetch_page(client: httpx.Client, url: str, number: int, policy: FetchPolicy) -> dict[str, Any]:
    payload = {"query": {}, "options": {"page": number, "limit": policy.page_size}}
    retrying = stamina.retry_context(
        on=lambda exc: retry_backoff(exc, policy.backoff_max),
        attempts=policy.retries + 1,
        timeout=None,
        wait_initial=policy.backoff_initial,
        wait_max=policy.backoff_max,
        wait_jitter=policy.backoff_initial,
    )
    try:
        for attempt in retrying:
            with attempt:
                return read_envelope(post(client, url, payload, policy.max_response_bytes))
    except Exception as exc:
        raise ExtractError(f"page {number}: {describe(exc, policy.retries + 1)}") from exc
    raise AssertionError("unreachable: stamina either returns or raises")


def post(client: httpx.Client, url: str, payload: dict[str, Any], max_bytes: int) -> bytes:
    with client.stream("POST", url, json=payload) as response:
        response.raise_for_status()
        content_type = response.headers.get("content-type", "")
        if "json" not in content_type:
            raise BadEnvelope(f"expected a JSON response, got content type {content_type!r}")
        return read_capped(response, max_bytes)


def read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """Read the body, stopping as soon as it passes `max_bytes`, whatever Content-Length says."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(f"Content-Length {declared} exceeds {max_bytes}")
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise ResponseTooLarge(f"body passed {max_bytes} bytes")
    return bytes(body)


def read_envelope(body: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(body)
    except ValueError as exc:
        raise BadEnvelope(f"invalid JSON ({exc})") from exc
    if not isinstance(envelope, dict):
        raise BadEnvelope(f"expected a JSON object, got {type(envelope).__name__}")
    if "docs" not in envelope:
        raise BadEnvelope("envelope is missing 'docs'")
    if not isinstance(envelope["docs"], list):
        raise BadEnvelope(f"'docs' is not a list but {type(envelope['docs']).__name__}")
    return envelope


def retry_backoff(exc: Exception, backoff_max: float) -> bool | float:
    """Retry transport faults, 429 and 5xx; a `Retry-After` in seconds sets the wait, capped."""
    if isinstance(exc, httpx.HTTPStatusError):
        if exc.response.status_code not in RETRYABLE_STATUS:
            return False
        retry_after = exc.response.headers.get("retry-after", "")
        try:
            return min(max(float(retry_after), 0.0), backoff_max)
        except ValueError:
            return True
    return isinstance(exc, httpx.TransportError)


def describe(exc: Exception, attempts: int) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        if code in RETRYABLE_STATUS:
            return f"HTTP {code} after {attempts} attempts"
        return f"HTTP {code} {exc.response.reason_phrase}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout after {attempts} attempts ({type(exc).__name__})"
    if isinstance(exc, httpx.TransportError):
        return f"{type(exc).__name__} after {attempts} attempts ({exc})"
    if isinstance(exc, ResponseTooLarge):
        return f"response larger than INGEST_MAX_RESPONSE_BYTES ({exc})"
    return str(exc)
