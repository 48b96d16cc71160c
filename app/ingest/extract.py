"""Pages from the upstream `/v4/crew/query` endpoint, one at a time; no database here."""

import email.utils
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import stamina
import structlog

from app.config import Settings
from app.ingest.body import (
    ACCEPT_ENCODING,
    DeadlineExceeded,
    ResponseTooLarge,
    UnsupportedEncoding,
    read_bounded,
)

USER_AGENT = "crew-etl/0.1 (SpaceX crew ETL service)"
RETRYABLE_STATUS = {429, 500, 502, 503, 504}
# A crew record has about 15 JSON values; a page may hold this many per record asked for before
# it is parsed at all, so that tiny values (`[]`, `{}`) cannot multiply into gigabytes.
MAX_VALUES_PER_RECORD = 200
DELAY_SECONDS = re.compile(r"\s*\d{1,9}(\.\d{1,6})?\s*")
# Control characters: upstream text in a message is kept to one plain line.
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
MAX_UPSTREAM_TEXT = 100


class ExtractError(Exception):
    """A page could not be fetched or understood; the message names the page and the cause."""


class BadEnvelope(Exception):
    pass


class UpstreamStatus(Exception):
    """An HTTP error status, without the request URL (which may carry secrets) in its text."""

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.reason = plain(response.reason_phrase)
        self.retry_after = response.headers.get("retry-after", "")
        super().__init__(f"HTTP {self.status_code} {self.reason}")


@dataclass(frozen=True)
class FetchPolicy:
    page_size: int = 100
    max_pages: int = 10_000
    max_response_bytes: int = 10_000_000
    retries: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    page_deadline: float = 120.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "FetchPolicy":
        return cls(
            page_size=settings.INGEST_PAGE_SIZE,
            max_pages=settings.INGEST_MAX_PAGES,
            max_response_bytes=settings.INGEST_MAX_RESPONSE_BYTES,
            retries=settings.HTTP_RETRIES,
            backoff_initial=settings.HTTP_BACKOFF_INITIAL_SECONDS,
            backoff_max=settings.HTTP_BACKOFF_MAX_SECONDS,
            page_deadline=settings.HTTP_PAGE_DEADLINE_SECONDS,
        )


@dataclass(frozen=True)
class Page:
    number: int
    records: list[Any]


def make_client(timeout_seconds: float) -> httpx.Client:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING}
    return httpx.Client(timeout=timeout_seconds, headers=headers)


def crew_query_url(base_url: str) -> str:
    return f"{base_url.rstrip('/')}/v4/crew/query"


def redacted(url: str) -> str:
    """`url` fit to show: a password in it and every query-string value become `***`."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<unparseable URL>"
    if parsed.password:
        parsed = parsed.copy_with(username=parsed.username, password="***")
    if parsed.query:
        query = "&".join(f"{key}=***" for key in parsed.params)
        parsed = parsed.copy_with(query=query.encode())
    return str(parsed)


def plain(text: str) -> str:
    """Upstream text (reason phrase, content type) for a message: one short line."""
    flat = UNPRINTABLE.sub("?", text)
    return flat if len(flat) <= MAX_UPSTREAM_TEXT else flat[:MAX_UPSTREAM_TEXT] + "…"


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
                f"page {number}: pagination does not advance (nextPage={plain(repr(next_number))})"
            )
        number = next_number
    raise ExtractError(
        f"page {number}: page cap reached, more than INGEST_MAX_PAGES={policy.max_pages} pages"
    )


def fetch_page(client: httpx.Client, url: str, number: int, policy: FetchPolicy) -> dict[str, Any]:
    """One page, retried as `retry_backoff` says, all attempts within the page's deadline.

    The error raised carries no traceback of its cause: the cause's text may hold the URL (and a
    secret in it); the message already names the page and the cause.
    """
    payload = {"query": {}, "options": {"page": number, "limit": policy.page_size}}
    deadline = time.monotonic() + policy.page_deadline
    retrying = stamina.retry_context(
        on=lambda exc: retry_backoff(exc, policy.backoff_max),
        attempts=policy.retries + 1,
        timeout=None,
        wait_initial=policy.backoff_initial,
        wait_max=policy.backoff_max,
        wait_jitter=policy.backoff_initial,
    )
    try:
        with structlog.contextvars.bound_contextvars(page=number):  # named on retry lines
            for attempt in retrying:
                with attempt:
                    body = post(client, url, payload, policy.max_response_bytes, deadline)
                    return read_envelope(body, policy.page_size)
    except Exception as exc:
        raise ExtractError(f"page {number}: {describe(exc, policy)}") from None
    raise AssertionError("unreachable: stamina either returns or raises")


def post(
    client: httpx.Client, url: str, payload: dict[str, Any], max_bytes: int, deadline: float
) -> bytearray:
    if time.monotonic() > deadline:
        raise DeadlineExceeded("deadline passed between attempts")
    with client.stream("POST", url, json=payload) as response:
        if response.is_error:
            raise UpstreamStatus(response)
        content_type = response.headers.get("content-type", "")
        if "json" not in content_type:
            raise BadEnvelope(f"expected a JSON response, got content type {plain(content_type)!r}")
        return read_bounded(response, max_bytes, deadline)


def read_envelope(body: bytearray, limit: int) -> dict[str, Any]:
    """Parse the page, refusing one with more JSON values than `limit` records could need, or
    more `docs` than the `limit` asked for (the upstream broke the contract)."""
    check_value_count(body, limit * MAX_VALUES_PER_RECORD)
    try:
        envelope = json.loads(body, parse_int=parse_int)
    except ValueError as exc:
        raise BadEnvelope(f"invalid JSON ({exc})") from None
    except RecursionError:
        raise BadEnvelope("invalid JSON (nested deeper than the parser allows)") from None
    if not isinstance(envelope, dict):
        raise BadEnvelope(f"expected a JSON object, got {type(envelope).__name__}")
    if "docs" not in envelope:
        raise BadEnvelope("envelope is missing 'docs'")
    docs = envelope["docs"]
    if not isinstance(docs, list):
        raise BadEnvelope(f"'docs' is not a list but {type(docs).__name__}")
    if len(docs) > limit:
        raise BadEnvelope(f"{len(docs)} docs, more than the limit of {limit} asked for")
    return envelope


def parse_int(digits: str) -> int | float:
    """Integers past Python's 4,300-digit conversion limit become floats (infinity) rather
    than failing the whole page."""
    return int(digits) if len(digits) < 4000 else float(digits)


def check_value_count(body: bytearray, max_values: int) -> None:
    """Every JSON value but the first follows a `,`, `:` or `[`, so their count bounds the values
    (from above: these characters inside strings count too). Only a page over the bound is
    counted again, with its strings removed first."""
    if body.count(b",") + body.count(b":") + body.count(b"[") < max_values:
        return
    bare = re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', body)
    values = 1 + bare.count(b",") + bare.count(b":") + bare.count(b"[") - bare.count(b"[]")
    if values > max_values:
        raise BadEnvelope(
            f"more than {max_values} JSON values in one page "
            f"({MAX_VALUES_PER_RECORD} per record asked for)"
        )


def retry_backoff(exc: Exception, backoff_max: float) -> bool | float:
    """Retry transport faults, 429 and 5xx; a valid `Retry-After` sets the wait, capped."""
    if isinstance(exc, UpstreamStatus):
        if exc.status_code not in RETRYABLE_STATUS:
            return False
        seconds = retry_after_seconds(exc.retry_after)
        return True if seconds is None else min(seconds, backoff_max)
    return isinstance(exc, httpx.TransportError) and not is_unknown_host(exc)


def is_unknown_host(exc: Exception) -> bool:
    """The resolver answered that the name does not exist: asking again soon changes nothing
    (a resolver that cannot answer now says "Temporary failure", which is retried)."""
    text = str(exc)
    return isinstance(exc, httpx.ConnectError) and any(
        marker in text for marker in UNKNOWN_HOST_MESSAGES
    )


# getaddrinfo's EAI_NONAME as glibc and macOS word it
UNKNOWN_HOST_MESSAGES = ("Name or service not known", "nodename nor servname provided")


def retry_after_seconds(value: str) -> float | None:
    """Seconds from a `Retry-After` of delay-seconds or an HTTP date; None for anything else
    (`nan`, `inf`, negative, garbage), which means the normal backoff."""
    if DELAY_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - datetime.now(UTC)).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def describe(exc: Exception, policy: FetchPolicy) -> str:
    attempts = policy.retries + 1
    if isinstance(exc, UpstreamStatus):
        if exc.status_code in RETRYABLE_STATUS:
            return f"HTTP {exc.status_code} after {attempts} attempts"
        return str(exc)
    if is_unknown_host(exc):
        return f"unknown host, not retried ({plain(str(exc))})"
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout after {attempts} attempts ({type(exc).__name__})"
    if isinstance(exc, httpx.TransportError):
        return f"{type(exc).__name__} after {attempts} attempts ({plain(str(exc))})"
    if isinstance(exc, ResponseTooLarge):
        return f"response larger than INGEST_MAX_RESPONSE_BYTES ({exc})"
    if isinstance(exc, DeadlineExceeded):
        return f"no complete response within HTTP_PAGE_DEADLINE_SECONDS={policy.page_deadline:g}"
    if isinstance(exc, UnsupportedEncoding | BadEnvelope | httpx.DecodingError):
        return str(exc)
    return f"{type(exc).__name__} ({plain(str(exc))})"
