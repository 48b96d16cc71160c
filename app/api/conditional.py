"""Conditional GET: validators derived from `crew.updated_at`, which every committed change to a
member moves (insert, update, soft delete, restore) and an unchanged run leaves alone.

A request with If-None-Match or If-Modified-Since first runs the one-row look-up of its
validator and answers 304 without building the body when the client's copy is current; any
other request gets the validator from the statement (or REPEATABLE READ transaction) that
builds its body, so a body never carries another state's validators.

Changes are dated to the microsecond (a run's transaction start), HTTP dates to the second, and
a run's changes become visible when it commits, possibly after a read dated the same second. So
Last-Modified is the change time rounded up, and If-Modified-Since answers 304 only when the
newest change is before the second that ends at the date sent: a copy dated within the second of
a change is always revalidated in full, by ETag or by a 200."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

from fastapi import Request, Response
from sqlalchemy import Connection

# Newest change to any member (an index-only look-up on ix_crew_updated_at).
LAST_CHANGE_OF_CREW = "SELECT max(updated_at) FROM crew"
# Last change to one member; its row also dates its versions. No row: unknown member.
LAST_CHANGE_OF_MEMBER = "SELECT updated_at FROM crew WHERE id = %s"

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CACHE_CONTROL = "no-cache"


SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class Validators:
    etag: str
    last_change: datetime | None  # to the microsecond
    last_modified: datetime | None  # whole seconds, as sent

    @classmethod
    def of(cls, last_change: datetime | None) -> "Validators":
        if last_change is None:
            return cls('"0"', None, None)
        micros = (last_change - EPOCH) // timedelta(microseconds=1)
        # rounded up, so that the same state always has the same date (in the second of the
        # change that date can be up to a second after the response's Date)
        return cls(f'"{micros:x}"', last_change, round_up(last_change))

    def headers(self) -> dict[str, str]:
        headers = {"ETag": self.etag, "Cache-Control": CACHE_CONTROL}
        if self.last_modified is not None:
            headers["Last-Modified"] = format_datetime(self.last_modified, usegmt=True)
        return headers

    def matches(self, request: Request) -> bool:
        """Whether the client's copy is current (RFC 9110 §13.2.2: If-None-Match first)."""
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None:
            tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
            return "*" in tags or self.etag in tags
        since = parse_http_date(request.headers.get("if-modified-since"))
        if since is None or self.last_change is None or since > datetime.now(UTC):
            return False  # a date in the future is ignored (RFC 9110 §13.1.3)
        return self.last_change <= since - SECOND


def round_up(moment: datetime) -> datetime:
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + SECOND


def is_conditional(request: Request) -> bool:
    """Whether the request carries a validator: only then is it checked before the body."""
    return "if-none-match" in request.headers or "if-modified-since" in request.headers


def parse_http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo is not None else None


def crew_validators(connection: Connection) -> Validators:
    return Validators.of(connection.exec_driver_sql(LAST_CHANGE_OF_CREW).scalar_one())


def member_validators(connection: Connection, crew_id: str) -> Validators | None:
    """None when the member is unknown."""
    row = connection.exec_driver_sql(LAST_CHANGE_OF_MEMBER, (crew_id,)).first()
    return None if row is None else Validators.of(row[0])


def not_modified(validators: Validators) -> Response:
    return Response(status_code=304, headers=validators.headers())


def json_response(body: str | bytes, validators: Validators) -> Response:
    return Response(body, media_type="application/json", headers=validators.headers())
