"""The upstream's whole listing, walked by id and proved complete; no database here.

Paging by page number (skip/limit) over a collection that changes between two requests skips
or repeats members: a delete before the read position shifts every later page by one. So the
listing is walked by id instead (keyset paging): each request asks for the members whose id
is greater than the last one seen, sorted by id, which the real upstream supports
(`query: {"_id": {"$gt": …}}`, `options.sort`). A member present upstream for the whole walk
is then on some page whatever else is written meanwhile.

That holds only if the upstream did what was asked, so every page is checked before it is
handed on, and an inconsistency fails the run (nothing is loaded or soft-deleted) with a
reason that names it:
- ids grow: no page repeats an earlier one, none goes backwards (a server that ignores the
  filter serves page 1 again), and a page with more to come is sorted;
- counts add up: each page's `totalDocs` (members after the last id seen) is the previous
  page's count less the members it listed, and the last page lists all that its count says.
  A count that moved means members were skipped, or the listing changed while it was read:
  either way the run cannot prove which members are gone, and the next run reads it again.
  A page without a count proves nothing, and fails the run the same way.

The real server caches each answer for five minutes under its URL and body, so a run could mix
pages cached before a write with pages read after it. Every walk's requests carry a token of
their own (`options.walk`, which the paginator ignores) so that none is answered from the cache.
"""

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from app.ingest.extract import ExtractError, FetchPolicy, crew_query_url, fetch_page, plain

UPSTREAM_ID = re.compile(r"[0-9a-fA-F]{24}")


class ListingInconsistent(ExtractError):
    """The pages do not add up to a complete listing: nothing may be soft-deleted from them."""


@dataclass(frozen=True)
class Page:
    number: int
    records: list[Any]


@dataclass
class Walk:
    """Where the walk stands: the last id listed and how many members the upstream counts
    after it."""

    last_id: str | None = None
    remaining: int | None = None
    listed: int = 0

    @property
    def position(self) -> str:
        return f"after id {self.last_id}" if self.last_id else "in all"


def keyset_query(last_id: str | None, limit: int, walk_token: str) -> dict[str, Any]:
    """The request body for the members after `last_id`, in id order."""
    query = {"_id": {"$gt": last_id}} if last_id else {}
    return {"query": query, "options": {"sort": {"_id": 1}, "limit": limit, "walk": walk_token}}


def iter_pages(
    client: httpx.Client, base_url: str, policy: FetchPolicy, walk_token: str | None = None
) -> Iterator[Page]:
    """Each page of the listing, checked; raises ExtractError on the first inconsistency."""
    url = crew_query_url(base_url)
    walk = Walk()
    token = walk_token or secrets.token_hex(8)
    for number in range(1, policy.max_pages + 1):
        body = keyset_query(walk.last_id, policy.page_size, token)
        envelope = fetch_page(client, url, number, body, policy)
        docs = envelope["docs"]
        more = has_next_page(number, envelope, docs)
        ids = upstream_ids(docs)
        check_ids(number, walk, ids, more)
        check_count(number, walk, count_after(envelope), len(docs), more)
        yield Page(number, docs)
        if not more:
            return
        walk.last_id = ids[-1]
        walk.listed += len(docs)
    raise ExtractError(
        f"page {policy.max_pages + 1}: page cap reached, more than "
        f"INGEST_MAX_PAGES={policy.max_pages} pages"
    )


def has_next_page(number: int, envelope: dict[str, Any], docs: list[Any]) -> bool:
    """`hasNextPage`; without one, the walk goes on until a page comes back empty."""
    more = envelope.get("hasNextPage")
    if more is None:
        return bool(docs)
    if not isinstance(more, bool):
        raise ExtractError(f"page {number}: hasNextPage is {plain(repr(more))}, not true or false")
    return more


def upstream_ids(docs: list[Any]) -> list[str]:
    """The ids of the page's records that have one the upstream could sort by, in page order
    and in lower case; a record without one is the validation's business (a reject)."""
    ids = []
    for doc in docs:
        value = doc.get("id") if isinstance(doc, dict) else None
        if isinstance(value, str) and UPSTREAM_ID.fullmatch(value):
            ids.append(value.lower())
    return ids


def check_ids(number: int, walk: Walk, ids: list[str], more: bool) -> None:
    if walk.last_id is not None and ids and min(ids) <= walk.last_id:
        if max(ids) <= walk.last_id:
            raise ListingInconsistent(
                f"page {number} repeats members already listed (id {ids[0]}, not after "
                f"{walk.last_id}): the upstream ignored the id filter; listing not consistent"
            )
        raise ListingInconsistent(
            f"page {number} goes backwards (id {min(ids)} after {walk.last_id}); "
            "listing not consistent"
        )
    if not more:
        return
    if not ids:
        raise ExtractError(
            f"page {number}: no record with an id to continue from, although hasNextPage is true"
        )
    for before, after in zip(ids, ids[1:], strict=False):
        if after < before:
            raise ListingInconsistent(
                f"page {number}: ids out of order ({before} before {after}) although sorted by "
                "id was asked; the upstream ignored the sort, so its pages cannot be walked safely"
            )


def count_after(envelope: dict[str, Any]) -> int | None:
    """`totalDocs`: how many members match the page's query, those after the last id seen."""
    total = envelope.get("totalDocs")
    if isinstance(total, float) and total.is_integer():
        return int(total)
    return total if isinstance(total, int) and not isinstance(total, bool) else None


def check_count(number: int, walk: Walk, total: int | None, listed: int, more: bool) -> None:
    """The counts must add up from page to page."""
    if total is None or total < 0:
        raise ListingInconsistent(
            f"listing not provably complete: page {number} sent no count of the members "
            f"{walk.position} (totalDocs), so skipped members could not be noticed; "
            "nothing deleted"
        )
    if walk.remaining is not None and total != walk.remaining:
        raise ListingInconsistent(
            f"listing incomplete: page {number} counts {total} members {walk.position}, "
            f"{walk.remaining} expected from page {number - 1} (members were skipped, or the "
            "listing changed while it was read); nothing deleted, the next run reads it again"
        )
    if not more and total != listed:
        raise ListingInconsistent(
            f"listing incomplete: page {number} is the last, with {listed} members, but the "
            f"upstream counts {total} {walk.position}; nothing deleted, the next run reads it again"
        )
    walk.remaining = total - listed
