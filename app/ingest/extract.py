"""One page from the upstream `/v4/crew/query` endpoint, fetched within its bounds and checked
as an envelope; how pages follow each other is app/ingest/listing.py's business. No database
here."""

import functools
import json
import re
from dataclasses import dataclass
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
from app.ingest.deadline import PageAttempts, SocketDeadline, retry_after_seconds

USER_AGENT = "crew-etl/0.1 (SpaceX crew ETL service)"
RETRYABLE_STATUS = {429, 500, 502, 503, 504}
# A crew record has about 15 JSON values; a page may hold this many per record asked for before
# it is parsed at all, so that tiny values (`[]`, `{}`) cannot multiply into gigabytes.
MAX_VALUES_PER_RECORD = 200
# ... but never fewer per page than this: a small page of members with many launches is valid.
MIN_VALUES_PER_PAGE = 100_000
# Control characters: upstream text in a message is kept to one plain line.
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")
MAX_UPSTREAM_TEXT = 100
ERROR_BODY_BYTES = 2048  # of an error response, read for its message (mongoose's, a CDN's)


class ExtractError(Exception):
    """A page could not be fetched or understood; the message names the page and the cause."""


class BadEnvelope(Exception):
    pass


class UpstreamStatus(Exception):
    """An HTTP error status, without the request URL (which may carry secrets) in its text.

    `detail` says what the body or headers tell of the cause: the upstream's own message (a
    `text/plain` error), or that a CDN answered with a challenge or an HTML page instead."""

    def __init__(self, response: httpx.Response, detail: str = "") -> None:
        self.status_code = response.status_code
        self.reason = plain(response.reason_phrase)
        self.retry_after = response.headers.get("retry-after", "")
        self.detail = detail
        super().__init__(f"HTTP {self.status_code} {self.reason}{detail}")


class RedirectNotFollowed(Exception):
    """The upstream answered with a redirect: followed blindly, it could lead anywhere."""


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


class UpstreamClient(httpx.Client):
    """A client that knows the socket of its one connection, opened by this page's request or
    kept alive from an earlier one, so that a page's deadline can cut it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.socket_deadline = SocketDeadline()


def make_client(timeout_seconds: float) -> UpstreamClient:
    """Pages are asked for one at a time: one connection is all a run needs, and keeping to one
    lets SocketDeadline know which socket a page's request is on."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return UpstreamClient(timeout=timeout_seconds, headers=headers, limits=limits)


def crew_query_url(base_url: str) -> str:
    """The query endpoint under `base_url`, keeping its path prefix and its query string as
    written, escapes included (`https://proxy.example/spacex/?key=abc` ->
    `https://proxy.example/spacex/v4/crew/query?key=abc`)."""
    try:
        base = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError):
        return f"{base_url.rstrip('/')}/v4/crew/query"
    path, _, query = base.raw_path.partition(b"?")
    raw_path = path.rstrip(b"/") + b"/v4/crew/query" + (b"?" + query if query else b"")
    return str(base.copy_with(raw_path=raw_path))


def redacted(url: str) -> str:
    """`url` fit to show: its user information (a token may stand there without a password) and
    every query-string key's value become `***`, and a bare query item (`?s3cret`) too."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<unparseable URL>"
    if parsed.userinfo:
        parsed = parsed.copy_with(username="***", password=None)
    if parsed.query:
        items = parsed.query.decode("ascii", "replace").split("&")
        query = "&".join(f"{key}=***" if sep else "***" for key, sep, _ in map(split_item, items))
        parsed = parsed.copy_with(query=query.encode())
    return str(parsed)


def split_item(item: str) -> tuple[str, str, str]:
    return item.partition("=")


def plain(text: str) -> str:
    """Upstream text (reason phrase, content type) for a message: one short line."""
    flat = UNPRINTABLE.sub("?", text)
    return flat if len(flat) <= MAX_UPSTREAM_TEXT else flat[:MAX_UPSTREAM_TEXT] + "…"


def fetch_page(
    client: httpx.Client, url: str, number: int, payload: dict[str, Any], policy: FetchPolicy
) -> dict[str, Any]:
    """One page, retried as `PageAttempts` says, connect to last byte and every wait between
    attempts within the page's deadline.

    The error raised carries no traceback of its cause: the cause's text may hold the URL (and a
    secret in it); the message already names the page and the cause.
    """
    socket_deadline = client.socket_deadline if isinstance(client, UpstreamClient) else None
    attempts = PageAttempts(
        policy.page_deadline, policy.backoff_initial, policy.backoff_max, socket_deadline
    )
    retrying = stamina.retry_context(
        on=functools.partial(retry_wait, attempts), attempts=policy.retries + 1, timeout=None
    )
    try:
        with structlog.contextvars.bound_contextvars(page=number):  # named on retry lines
            for attempt in retrying:
                with attempt:
                    body = post(client, url, payload, policy, attempts)
                    return read_envelope(body, policy.page_size)
    except Exception as exc:
        raise ExtractError(f"page {number}: {describe(exc, policy, attempts)}") from None
    raise AssertionError("unreachable: stamina either returns or raises")


def retry_wait(attempts: PageAttempts, exc: Exception) -> bool | float:
    """stamina's `on`: False to give up, else the seconds to wait. Transport faults, 429 and
    5xx are retried; a valid `Retry-After` sets the wait."""
    if not retryable(exc):
        return False
    asked = retry_after_seconds(exc.retry_after) if isinstance(exc, UpstreamStatus) else None
    wait = attempts.next_wait(asked)
    return False if wait is None else wait


def retryable(exc: Exception) -> bool:
    if isinstance(exc, UpstreamStatus):
        return exc.status_code in RETRYABLE_STATUS
    return isinstance(exc, httpx.TransportError) and not is_unknown_host(exc)


def post(
    client: httpx.Client,
    url: str,
    payload: dict[str, Any],
    policy: FetchPolicy,
    attempts: PageAttempts,
) -> bytearray:
    left = attempts.time_left()
    if left <= 0:
        raise DeadlineExceeded("deadline passed between attempts")
    attempts.made += 1
    timeout = min(client.timeout.read or left, left)
    try:
        with attempts.socket_deadline.armed(attempts.deadline):
            request = client.build_request(
                "POST",
                url,
                json=payload,
                timeout=timeout,
                extensions={"trace": attempts.socket_deadline.trace},
            )
            response = client.send(request, stream=True)
            try:
                check_response(response)
                return read_bounded(response, policy.max_response_bytes, attempts.deadline)
            finally:
                response.close()
    except httpx.TransportError:
        if attempts.time_left() <= 0:  # the deadline cut the connection
            raise DeadlineExceeded("deadline passed") from None
        raise


def check_response(response: httpx.Response) -> None:
    """Raise for a response that is not a page: a redirect, an error, anything but JSON."""
    if response.is_redirect:
        location = redacted(response.headers.get("location", ""))
        raise RedirectNotFollowed(
            f"HTTP {response.status_code} redirect not followed (Location: {plain(location)}); "
            "set SPACEX_API_URL to where it points if that is the API"
        )
    content_type = response.headers.get("content-type", "")
    if response.is_error:
        raise UpstreamStatus(response, error_detail(response, content_type))
    if "json" not in content_type:
        raise BadEnvelope(f"expected a JSON response, got content type {plain(content_type)!r}")


def error_detail(response: httpx.Response, content_type: str) -> str:
    """What an error response says of its cause, as a short suffix for the message."""
    if response.headers.get("cf-mitigated", "").lower() == "challenge":
        return (
            ": a CDN challenge page (cf-mitigated: challenge), not the API; the CDN in front of "
            "the upstream is refusing this client: retry later, or use a mirror in SPACEX_API_URL"
        )
    if "text/html" in content_type:
        return (
            ": an HTML page, not the API (a CDN or proxy error page); retry later, "
            "or check SPACEX_API_URL"
        )
    if "text/plain" in content_type:
        text = read_error_text(response)
        said = text and text.lower() != response.reason_phrase.lower()  # more than the phrase
        return f" ({plain(text)})" if said else ""
    return ""


def read_error_text(response: httpx.Response) -> str:
    """The start of a plain-text error body (mongoose's message); empty when unreadable."""
    body = b""
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= ERROR_BODY_BYTES:
                break
    except (httpx.HTTPError, ValueError):
        return ""
    return body[:ERROR_BODY_BYTES].decode("utf-8", "replace").strip()


def read_envelope(body: bytearray, limit: int) -> dict[str, Any]:
    """Parse the page, refusing one with more JSON values than `limit` records could need, or
    more `docs` than the `limit` asked for (the upstream broke the contract)."""
    check_value_count(body, max(limit * MAX_VALUES_PER_RECORD, MIN_VALUES_PER_PAGE))
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
            f"({MAX_VALUES_PER_RECORD} per record asked for, {MIN_VALUES_PER_PAGE} at least)"
        )


def describe(exc: Exception, policy: FetchPolicy, attempts: PageAttempts) -> str:
    """The cause in one line; when time ran out before another attempt, why, after it."""
    cause = describe_cause(exc, policy, attempts)
    return cause if attempts.gave_up is None else f"{cause}: {attempts.gave_up}"


def is_unknown_host(exc: Exception) -> bool:
    """The resolver answered that the name does not exist: asking again soon changes nothing
    (a resolver that cannot answer now says "Temporary failure", which is retried)."""
    text = str(exc)
    return isinstance(exc, httpx.ConnectError) and any(
        marker in text for marker in UNKNOWN_HOST_MESSAGES
    )


# getaddrinfo's EAI_NONAME as glibc and macOS word it
UNKNOWN_HOST_MESSAGES = ("Name or service not known", "nodename nor servname provided")


def describe_cause(exc: Exception, policy: FetchPolicy, attempts: PageAttempts) -> str:
    tries = f"after {attempts.made} attempt{'s' if attempts.made != 1 else ''}"
    if isinstance(exc, UpstreamStatus):
        if exc.status_code in RETRYABLE_STATUS:
            return f"HTTP {exc.status_code} {tries}{exc.detail}"
        return str(exc)
    if is_unknown_host(exc):
        return f"unknown host, not retried ({plain(str(exc))})"
    if isinstance(exc, httpx.InvalidURL):  # its text quotes the URL's parts, secrets included
        return "SPACEX_API_URL is not a valid URL (not shown: it may hold a secret)"
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout {tries} ({type(exc).__name__})"
    if isinstance(exc, httpx.TransportError):
        return f"{type(exc).__name__} {tries} ({plain(str(exc))})"
    if isinstance(exc, ResponseTooLarge):
        return f"response larger than INGEST_MAX_RESPONSE_BYTES ({exc})"
    if isinstance(exc, DeadlineExceeded):
        return f"no complete response within HTTP_PAGE_DEADLINE_SECONDS={policy.page_deadline:g}"
    if isinstance(exc, UnsupportedEncoding | BadEnvelope | RedirectNotFollowed):
        return str(exc)
    if isinstance(exc, httpx.DecodingError):
        return str(exc)
    return f"{type(exc).__name__} ({plain(str(exc))})"
