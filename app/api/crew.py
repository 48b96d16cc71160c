"""Crew reads. PostgreSQL renders each response as JSON in one statement (app/api/crew_query.py),
so a request costs one round trip and little Python."""

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime
from sqlalchemy import Connection, Text, bindparam, cast, func
from sqlmodel import select

from app.api import conditional, responses
from app.api import cursor as cursors
from app.api.crew_count import CrewCount, chosen
from app.api.crew_query import PUBLIC_FIELDS, SOURCES, compiled, list_query, public_column
from app.api.crew_sort import CrewSort
from app.api.deps import crew_read_connection, in_read_thread
from app.models import HAS_TEXT, HEX24_ANY_CASE, CrewPublic, CrewStatus, CursorPage

router = APIRouter(prefix="/crew", tags=["crew"])

# With `count=estimated`: above this many expected matches `total` is the planner's estimate.
ESTIMATE_ABOVE = 10_000
CURSOR_PATTERN = r"^[A-Za-z0-9_-]*$"

AsOf = Annotated[
    AwareDatetime | None,
    Query(
        description="Answer as the crew were at this instant (RFC 3339, with an offset; not in "
        "the future). Before the first run there was no crew.",
        examples=["2026-11-20T08:00:00Z"],
    ),
]


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def filter_values(
    agency: str | None, status: CrewStatus | None, name: str | None, launch: str | None
) -> dict[str, Any]:
    """Bound values of the filters given, normalised as the stored data is."""
    values = {
        "agency": agency.strip() if agency is not None else None,  # lowered in SQL
        "status": status.value if status is not None else None,
        "name": f"%{escape_like(name)}%" if name is not None else None,
        "launch": [launch.lower()] if launch is not None else None,
    }
    return {name: value for name, value in values.items() if value is not None}


def bound_sql(connection: Connection, sql: str, values: dict[str, Any]) -> str:
    """SQL with its parameters quoted in, by the driver, to hand to planner_row_estimate()."""
    with connection.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
        return cursor.mogrify(sql, values).decode()  # type: ignore[no-any-return]


def source_at(as_of: datetime | None) -> tuple[str, dict[str, Any]]:
    """The relation to read (the crew, or the crew as of an instant) and its parameters."""
    if as_of is None:
        return "crew", {}
    try:
        instant = as_of.astimezone(UTC)  # PostgreSQL takes offsets up to 15:59 only
    except OverflowError:
        raise invalid("as_of", "as_of is out of range", as_of.isoformat()) from None
    if instant > datetime.now(UTC):
        raise invalid("as_of", "as_of is in the future", as_of.isoformat())
    return "crew_as_of", {"as_of": instant}


def invalid(parameter: str, message: str, value: Any) -> RequestValidationError:
    """A 422 shaped like FastAPI's own parameter errors."""
    error = {"type": "value_error", "loc": ("query", parameter), "msg": message, "input": value}
    return RequestValidationError([error])


def cursor_position(cursor: str, query_fingerprint: str, sort: CrewSort) -> tuple[Any, str]:
    """The (sort key, id) the page starts after, typed as the sort key's column."""
    try:
        key, row_id = cursors.decode(cursor, query_fingerprint)
        if sort.lstrip("-") != "updated_at":
            return key, row_id
        moment = datetime.fromisoformat(key)
        if moment.tzinfo is None:
            raise ValueError("cursor time without a zone")
        return moment.astimezone(UTC), row_id  # PostgreSQL takes offsets up to 15:59 only
    except (ValueError, OverflowError) as error:
        message = str(error) if isinstance(error, cursors.InvalidCursor) else "not a valid cursor"
        raise invalid("cursor", message, cursor) from error


def with_next(body: str, next_cursor: str | None) -> str:
    """The envelope PostgreSQL rendered (a JSON object) with `next` added as its last member."""
    return f'{body[:-1]}, "next" : {json.dumps(next_cursor)}}}'


def next_link(request: Request, next_cursor: str) -> str:
    """RFC 8288 link to the next page: this request's query with the cursor instead of offset."""
    url = request.url.remove_query_params(["offset", "cursor"])
    url = url.include_query_params(cursor=next_cursor)
    return f'<{url.path}?{url.query}>; rel="next"'


@router.get(
    "",
    summary="List crew members",
    response_model=CursorPage[CrewPublic],
    response_description="A page of crew members, with `next` to continue",
    operation_id="list_crew",
    responses=responses.conditional_get(None, **responses.LIST_HEADERS),
)
async def read_crew(
    request: Request,
    agency: Annotated[
        str | None,
        Query(
            max_length=100,
            pattern=HAS_TEXT,
            description="Agency, case-insensitive exact match, surrounding whitespace ignored",
        ),
    ] = None,
    status: Annotated[CrewStatus | None, Query(description="Crew status")] = None,
    name: Annotated[
        str | None,
        Query(
            max_length=200, pattern=HAS_TEXT, description="Case-insensitive substring of the name"
        ),
    ] = None,
    launch: Annotated[
        str | None,
        Query(pattern=HEX24_ANY_CASE, description="Only crew who flew on this launch id"),
    ] = None,
    include_deleted: Annotated[
        bool, Query(description="Also list crew the upstream no longer returns")
    ] = False,
    sort: Annotated[
        CrewSort, Query(description="Sort key; a leading `-` sorts descending")
    ] = CrewSort.name,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 100,
    offset: Annotated[
        int,
        Query(ge=0, le=2_000_000_000, description="Rows to skip; costs O(offset), prefer cursor"),
    ] = 0,
    cursor: Annotated[
        str | None,
        Query(
            max_length=4000,
            pattern=CURSOR_PATTERN,
            description="`next` of the previous page; continues it with the same filters and sort",
        ),
    ] = None,
    as_of: AsOf = None,
    count: Annotated[
        CrewCount | None,
        Query(
            description="How `total` is computed: `planned` (default) the planner's estimate, "
            "exact where the page proves it; `estimated` an exact count when at most 10,000 "
            "matches are expected, else as planned; `exact` a count of every match (costs a "
            "scan of them). Wins over `Prefer: count=...`"
        ),
    ] = None,
    prefer: Annotated[
        str | None,
        Header(
            description="RFC 7240 preferences; `count=exact|planned|estimated` chooses as the "
            "`count` parameter does, and is echoed in `Preference-Applied` when applied",
            examples=["count=exact"],
        ),
    ] = None,
) -> Response:
    """Crew members loaded from the upstream, filtered, sorted and paginated.

    `total` is exact when `total_exact` is true. By default (`count=planned`) it is the
    planner's estimate, exact when the page itself proves it (a first page holding every match,
    a last page by offset), so a page costs the same however many rows match; ask
    `count=exact` (or `Prefer: count=exact`) for an exact count at the cost of a scan of the
    matches, or `count=estimated` for an exact count of up to 10,000 matches. `next` (also sent as
    a `Link: <...>; rel="next"` header) continues after the last item in time independent of
    depth; `offset` reads and skips the rows before the page. With `as_of`, every filter, sort
    and page applies to the crew as they were at that instant.
    """
    filters = (agency, status, name, launch, include_deleted)
    # `prefer` declares the header; it may come more than once, so all of them are read.
    mode, applied = chosen(count, request.headers.getlist("prefer"))
    page = (sort, limit, offset, cursor, as_of, mode)
    response = await in_read_thread(
        list_page, request, *filters, *page, connect=crew_read_connection
    )
    response.headers["Vary"] = "Prefer"
    if applied:
        response.headers["Preference-Applied"] = f"count={mode.value}"
    return response


def list_page(
    connection: Connection,
    request: Request,
    agency: str | None,
    status: CrewStatus | None,
    name: str | None,
    launch: str | None,
    include_deleted: bool,
    sort: CrewSort,
    limit: int,
    offset: int,
    cursor: str | None,
    as_of: datetime | None,
    count_mode: CrewCount,
) -> Response:
    """The page `read_crew` answers, in a worker thread with its read connection."""
    source, source_params = source_at(as_of)
    values = filter_values(agency, status, name, launch)
    filters = frozenset(values) | (set() if include_deleted else {"live"})
    query = {"source": source, "filters": values, "include_deleted": include_deleted, "sort": sort}
    query |= {name: value.isoformat() for name, value in source_params.items()}
    query_fingerprint = cursors.fingerprint(query)
    params = {
        **values,
        **source_params,
        "estimate_above": ESTIMATE_ABOVE,
        "limit": limit,
        "offset": offset,
    }
    trigrams = name is not None and len(name) >= 3
    if trigrams:
        params["name_text"] = name  # where a name-sorted walk starts
    if cursor is not None:
        if offset:
            raise invalid("offset", "offset cannot be combined with cursor", offset)
        params["after_key"], params["after_id"] = cursor_position(cursor, query_fingerprint, sort)
    # only once the request is known to be valid; `as_of` states are checked with their body
    if conditional.is_conditional(request) and as_of is None:
        validators = conditional.crew_validators(connection)
        if validators.matches(request):
            return conditional.not_modified(validators)
    keyset, skips = cursor is not None, offset > 0
    statement = list_query(source, filters, sort, keyset, skips, trigrams, count_mode)
    params["matches_sql"] = bound_sql(connection, statement.matches, values | source_params)
    body, last, last_change = connection.exec_driver_sql(statement.response, params).one()
    validators = conditional.Validators.of(last_change)
    if validators.matches(request):
        return conditional.not_modified(validators)
    next_cursor = cursors.encode(query_fingerprint, json.loads(last)) if last else None
    response = conditional.json_response(with_next(body, next_cursor), validators)
    if next_cursor:
        response.headers["Link"] = next_link(request, next_cursor)
    return response


def member_query(source: str) -> str:
    """(member JSON, its `updated_at`: the validator of the state shown) for one id."""
    relation = SOURCES[source]()
    columns = (public_column(relation.c, field) for field in PUBLIC_FIELDS)
    found = select(*columns).add_columns(relation.c.updated_at.label("last_change"))
    member = found.where(relation.c.id == bindparam("id")).subquery("member")
    shown = select(*(member.c[field] for field in PUBLIC_FIELDS)).subquery("shown")
    body = cast(func.row_to_json(shown.table_valued()), Text)
    return compiled(select(body, member.c.last_change).select_from(member))


MEMBER_SQL = {source: member_query(source) for source in SOURCES}


@router.get(
    "/{crew_id}",
    summary="Get one crew member",
    response_model=CrewPublic,
    response_description="The crew member",
    operation_id="get_crew_member",
    responses=responses.conditional_get("crew member (then or ever, with `as_of`)"),
)
async def read_crew_member(
    request: Request,
    crew_id: Annotated[str, Path(pattern=HEX24_ANY_CASE, description="24-hex crew id")],
    as_of: AsOf = None,
) -> Response:
    """One crew member by id, including soft-deleted ones (their `deleted_at` is set); with
    `as_of`, as the member was at that instant (404 if unknown then)."""
    return await in_read_thread(member_page, request, crew_id, as_of, connect=crew_read_connection)


def member_page(
    connection: Connection, request: Request, crew_id: str, as_of: datetime | None
) -> Response:
    """The answer of `read_crew_member`, in a worker thread with its read connection."""
    source, source_params = source_at(as_of)
    if conditional.is_conditional(request) and as_of is None:
        validators = conditional.member_validators(connection, crew_id.lower())
        if validators is not None and validators.matches(request):
            return conditional.not_modified(validators)
    params = {"id": crew_id.lower(), **source_params}
    row = connection.exec_driver_sql(MEMBER_SQL[source], params).first()
    if row is None:
        raise HTTPException(status_code=404, detail=f"crew member {crew_id} not found")
    validators = conditional.Validators.of(row[1])
    if validators.matches(request):  # an `as_of` state, checked against itself
        return conditional.not_modified(validators)
    return conditional.json_response(row[0], validators)
