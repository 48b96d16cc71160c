"""Crew reads. PostgreSQL renders each response as JSON in one statement, compiled once per
combination of filters and sort, so a request costs one round trip and little Python."""

import functools
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response
from sqlalchemy import Connection, Text, bindparam, case, cast, func, literal_column, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import String, col, select

from app.api.deps import ReadConnectionDep
from app.models import HEX24_ANY_CASE, PRINTABLE, Crew, CrewPublic, CrewStatus, Page

router = APIRouter(prefix="/crew", tags=["crew"])

# Above this many expected matches `total` is the planner's estimate and `total_exact` is false.
ESTIMATE_ABOVE = 10_000

SortKey = Literal[
    "name", "-name", "agency", "-agency", "status", "-status", "updated_at", "-updated_at"
]

DIALECT = postgresql.psycopg2.dialect()  # type: ignore[no-untyped-call]
# What a crew member looks like in a response: the CrewPublic fields, in their order.
PUBLIC_COLUMNS = [Crew.__table__.c[field] for field in CrewPublic.model_fields]  # type: ignore[attr-defined]


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def crew_condition(name: str) -> ColumnElement[bool]:
    """The WHERE condition of one filter; its value arrives as the bound parameter `name`."""
    match name:
        case "live":
            return col(Crew.deleted_at).is_(None)
        case "agency":
            return func.lower(Crew.agency) == bindparam("agency")
        case "status":
            return col(Crew.status) == bindparam("status")
        case "name":
            return col(Crew.name).ilike(bindparam("name"), escape="\\")
        case "launch":
            return col(Crew.launches).contains(bindparam("launch", type_=ARRAY(String(24))))
    raise ValueError(f"unknown crew filter {name!r}")


def sort_order(columns: Any, sort: SortKey) -> tuple[ColumnElement[Any], ...]:
    """ORDER BY for a sort key, with the id as tie-breaker so pages are stable."""
    key = columns[sort.lstrip("-")]
    return (key.desc() if sort.startswith("-") else key.asc(), columns["id"])


def compiled(statement: Any) -> str:
    return str(statement.compile(dialect=DIALECT))


@functools.cache
def list_query(filters: frozenset[str], sort: SortKey) -> tuple[str, str]:
    """(matches SQL, response SQL) for one combination of filters and sort.

    The response is `{"items", "total", "limit", "offset", "total_exact"}` built by PostgreSQL:
    `total` is the planner's estimate for the matches SQL (passed in as text) when that is above
    `:estimate_above`, else an exact count, which PostgreSQL evaluates only in that case.
    """
    where = [crew_condition(name) for name in sorted(filters)]
    matches: Select[Any] = select(literal_column("1")).select_from(Crew).where(*where)
    page = (
        select(*PUBLIC_COLUMNS)
        .where(*where)
        .order_by(*sort_order(Crew.__table__.c, sort))  # type: ignore[attr-defined]
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
        .subquery("member")
    )
    in_order = aggregate_order_by(page.table_valued(), *sort_order(page.c, sort))
    items = select(func.coalesce(func.json_agg(in_order), text("'[]'::json"))).scalar_subquery()
    estimate = select(func.planner_row_estimate(bindparam("matches_sql")).label("rows")).cte(
        "estimate"
    )
    exact = estimate.c.rows <= bindparam("estimate_above")
    count = select(func.count()).select_from(Crew).where(*where).scalar_subquery()
    response = func.json_build_object(
        *(literal_column("'items'"), items),
        *(literal_column("'total'"), case((exact, count), else_=estimate.c.rows)),
        *(literal_column("'limit'"), bindparam("limit")),
        *(literal_column("'offset'"), bindparam("offset")),
        *(literal_column("'total_exact'"), exact),
    )
    return compiled(matches), compiled(select(cast(response, Text)).select_from(estimate))


def filter_values(
    agency: str | None, status: CrewStatus | None, name: str | None, launch: str | None
) -> dict[str, Any]:
    """Bound values of the filters given, normalised as the stored data is."""
    values = {
        "agency": agency.lower() if agency is not None else None,
        "status": status.value if status is not None else None,
        "name": f"%{escape_like(name)}%" if name is not None else None,
        "launch": [launch.lower()] if launch is not None else None,
    }
    return {name: value for name, value in values.items() if value is not None}


def bound_sql(connection: Connection, sql: str, values: dict[str, Any]) -> str:
    """SQL with its parameters quoted in, by the driver, to hand to planner_row_estimate()."""
    with connection.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
        return cursor.mogrify(sql, values).decode()  # type: ignore[no-any-return]


@router.get("", summary="List crew members", response_model=Page[CrewPublic])
def read_crew(
    connection: ReadConnectionDep,
    agency: Annotated[
        str | None,
        Query(
            max_length=100, pattern=PRINTABLE, description="Agency, case-insensitive exact match"
        ),
    ] = None,
    status: Annotated[CrewStatus | None, Query(description="Crew status")] = None,
    name: Annotated[
        str | None,
        Query(
            max_length=200, pattern=PRINTABLE, description="Case-insensitive substring of the name"
        ),
    ] = None,
    launch: Annotated[
        str | None,
        Query(pattern=HEX24_ANY_CASE, description="Only crew who flew on this launch id"),
    ] = None,
    include_deleted: Annotated[
        bool, Query(description="Also list crew the upstream no longer returns")
    ] = False,
    sort: Annotated[SortKey, Query(description="Sort key; prefix with - for descending")] = "name",
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 100,
    offset: Annotated[int, Query(ge=0, le=2_000_000_000, description="Rows to skip")] = 0,
) -> Response:
    """Crew members loaded from the upstream, filtered, sorted and paginated.

    `total` is exact when `total_exact` is true; above 10,000 expected matches it is the
    planner's estimate, so a page costs the same however many rows match.
    """
    values = filter_values(agency, status, name, launch)
    filters = frozenset(values) | (set() if include_deleted else {"live"})
    matches_sql, response_sql = list_query(filters, sort)
    params = {
        **values,
        "matches_sql": bound_sql(connection, matches_sql, values),
        "estimate_above": ESTIMATE_ABOVE,
        "limit": limit,
        "offset": offset,
    }
    body = connection.exec_driver_sql(response_sql, params).scalar_one()
    return Response(body, media_type="application/json")


def member_query() -> str:
    member = select(*PUBLIC_COLUMNS).where(col(Crew.id) == bindparam("id")).subquery("member")
    return compiled(select(cast(func.row_to_json(member.table_valued()), Text)))


MEMBER_SQL = member_query()


@router.get(
    "/{crew_id}",
    summary="Get one crew member",
    response_model=CrewPublic,
    responses={404: {"description": "Unknown id"}},
)
def read_crew_member(
    connection: ReadConnectionDep,
    crew_id: Annotated[str, Path(pattern=HEX24_ANY_CASE, description="24-hex crew id")],
) -> Response:
    """One crew member by id, including soft-deleted ones (their `deleted_at` is set)."""
    body = connection.exec_driver_sql(MEMBER_SQL, {"id": crew_id.lower()}).scalar_one_or_none()
    if body is None:
        raise HTTPException(status_code=404, detail=f"crew member {crew_id} not found")
    return Response(body, media_type="application/json")
