"""Paging, retries and envelope checks of extract and listing, the upstream mocked by httpx_mock.

The listing's checks against a real server, and a concurrent writer, are in test_listing.py."""

import email.utils
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from app.ingest.extract import (
    BadEnvelope,
    ExtractError,
    FetchPolicy,
    crew_query_url,
    make_client,
    read_envelope,
    redacted,
    retry_after_seconds,
)
from app.ingest.listing import iter_pages, keyset_query

BASE = "https://api.spacexdata.test"
URL = f"{BASE}/v4/crew/query"
FAST = FetchPolicy(page_size=2, retries=2, backoff_initial=0.001, backoff_max=0.01)


def member(number: int) -> dict[str, str]:
    return {"id": f"{number:024x}"}


def page(number: int, docs: list[Any], last: int) -> dict[str, Any]:
    """Page `number` of `last`, each holding len(docs) members: counts that add up."""
    total = (last - number + 1) * len(docs)
    return {"docs": docs, "totalDocs": total, "page": 1, "hasNextPage": number < last}


def fetch_all(policy: FetchPolicy = FAST) -> list[tuple[int, list[Any]]]:
    with make_client(1) as client:
        return [(p.number, p.records) for p in iter_pages(client, BASE, policy, "w")]


def test_walks_the_listing_by_id_until_has_next_page_is_false(httpx_mock: HTTPXMock) -> None:
    after = None
    for number in (1, 2, 3):
        docs = [member(2 * number - 1), member(2 * number)]
        body = keyset_query(after, 2, "w")
        httpx_mock.add_response(url=URL, match_json=body, json=page(number, docs, last=3))
        after = docs[-1]["id"]

    assert [ids for _, ids in fetch_all()] == [
        [member(1), member(2)],
        [member(3), member(4)],
        [member(5), member(6)],
    ]
    assert json.loads(httpx_mock.get_requests()[1].content) == {
        "query": {"_id": {"$gt": f"{2:024x}"}},
        "options": {"sort": {"_id": 1}, "limit": 2, "walk": "w"},
    }


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("https://api.spacexdata.com", "https://api.spacexdata.com/v4/crew/query"),
        ("https://proxy.test/spacex/", "https://proxy.test/spacex/v4/crew/query"),
        ("http://host/?key=abc", "http://host/v4/crew/query?key=abc"),
        ("https://proxy.test/p?key=a&b=2", "https://proxy.test/p/v4/crew/query?key=a&b=2"),
    ],
)
def test_the_base_url_keeps_its_path_prefix_and_query_string(base: str, url: str) -> None:
    assert crew_query_url(base) == url


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_retries_retryable_status_then_succeeds(httpx_mock: HTTPXMock, status: int) -> None:
    httpx_mock.add_response(url=URL, status_code=status)
    httpx_mock.add_response(url=URL, json=page(1, [member(1)], last=1))

    assert fetch_all() == [(1, [member(1)])]
    assert len(httpx_mock.get_requests()) == 2


def test_retries_timeouts_and_connect_errors(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ReadTimeout("slow"), url=URL)
    httpx_mock.add_exception(httpx.ConnectError("refused"), url=URL)
    httpx_mock.add_response(url=URL, json=page(1, [member(1)], last=1))

    assert fetch_all() == [(1, [member(1)])]


def test_gives_up_after_the_last_retry_naming_page_and_status(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=URL, json=page(1, [member(1)], last=2))
    httpx_mock.add_response(url=URL, status_code=503, is_reusable=True)

    with pytest.raises(ExtractError, match=r"^page 2: HTTP 503 after 3 attempts$"):
        fetch_all()
    assert len(httpx_mock.get_requests()) == 4


def test_gives_up_on_timeouts(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ReadTimeout("slow"), url=URL, is_reusable=True)

    with pytest.raises(ExtractError, match=r"^page 1: timeout after 3 attempts"):
        fetch_all()


def test_client_errors_are_not_retried(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=URL, status_code=404)

    with pytest.raises(ExtractError, match=r"^page 1: HTTP 404 Not Found$"):
        fetch_all()
    assert len(httpx_mock.get_requests()) == 1


@pytest.mark.parametrize(
    ("response", "message"),
    [
        ({"json": {"page": 1}}, "page 1: envelope is missing 'docs'"),
        ({"json": {"docs": {"a": 1}}}, "page 1: 'docs' is not a list but dict"),
        ({"json": [1, 2]}, "page 1: expected a JSON object, got list"),
        ({"text": "<html/>", "headers": {"content-type": "text/html"}}, "page 1: expected a JSON"),
        ({"text": "{not json", "headers": {"content-type": "application/json"}}, "invalid JSON"),
    ],
)
def test_bad_envelopes_fail_with_page_and_cause(
    httpx_mock: HTTPXMock, response: dict[str, Any], message: str
) -> None:
    httpx_mock.add_response(url=URL, **response)

    with pytest.raises(ExtractError) as failure:
        fetch_all()
    assert message in str(failure.value)


def test_retry_after_sets_the_wait(httpx_mock: HTTPXMock) -> None:
    import stamina.instrumentation

    waits: list[float] = []
    stamina.instrumentation.set_on_retry_hooks([lambda details: waits.append(details.wait_for)])
    httpx_mock.add_response(url=URL, status_code=429, headers={"Retry-After": "0.2"})
    httpx_mock.add_response(url=URL, status_code=429, headers={"Retry-After": "60"})
    httpx_mock.add_response(url=URL, json=page(1, [], last=1))
    policy = FetchPolicy(retries=2, backoff_initial=0.001, backoff_max=0.3)

    try:
        assert fetch_all(policy) == [(1, [])]
    finally:
        stamina.instrumentation.set_on_retry_hooks(None)
    assert waits == [0.2, 0.3]  # as told, then capped by HTTP_BACKOFF_MAX_SECONDS (within 120 s)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 0.25 ", 0.25),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),  # a date in the past: at once
        ("nan", None),
        ("inf", None),
        ("-1", None),
        ("1e3", None),
        ("1_000", None),
        ("", None),
        ("tomorrow", None),
    ],
)
def test_retry_after_is_delay_seconds_or_an_http_date(value: str, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds


def test_retry_after_as_a_future_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=90)

    wait = retry_after_seconds(email.utils.format_datetime(when, usegmt=True))

    assert wait is not None and 85 <= wait <= 90


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pw@host:8/v4/crew/query", "http://***@host:8/v4/crew/query"),
        ("http://s3cret-token@host/v4/crew/query", "http://***@host/v4/crew/query"),
        ("https://host/q?s3cret", "https://host/q?***"),
        ("https://host/q?key=secret&v=1", "https://host/q?key=***&v=***"),
        ("https://api.spacexdata.com/v4/crew/query", "https://api.spacexdata.com/v4/crew/query"),
    ],
)
def test_urls_are_shown_without_secrets(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_a_reason_phrase_is_one_short_plain_line(httpx_mock: HTTPXMock) -> None:
    phrase = b"[link=http://evil.test]Teapot[/]\x1b[31m" + b"x" * 300
    teapot = httpx.Response(418, extensions={"reason_phrase": phrase})
    httpx_mock.add_callback(lambda request: teapot, url=URL)

    with pytest.raises(ExtractError) as failure:
        fetch_all()
    message = str(failure.value)
    assert message.startswith("page 1: HTTP 418 [link=http://evil.test]Teapot[/]?[31mxxx")
    assert message.endswith("…") and len(message) < 130


def test_commas_inside_strings_do_not_count_as_values() -> None:
    record = {"id": "a" * 24, "note": ",:[" * 50_000}
    body = bytearray(json.dumps({"docs": [record]}).encode())

    assert read_envelope(body, limit=1)["docs"] == [record]
    with pytest.raises(BadEnvelope, match=r"^more than 100000 JSON values in one page"):
        read_envelope(bytearray(json.dumps({"docs": [[[]] * 100_001]}).encode()), limit=1)
