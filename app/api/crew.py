import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response
from sqlalchemy import Text, cast, func, literal, text
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from app.api.deps import SessionDep
from app.models import HEX24_ANY_CASE, PRINTABLE, Crew, CrewPublic, CrewStatus, Page

router = APIRouter(prefix="/crew", tags=["crew"])

# Above this many expected matches `total` is the planner's estimate and `total_exact` is false.
ESTIMATE_ABOVE = 10_000

SortKey = Literal[
    "name", "-name", "agency", "-agency", "status", "-status", "updated_at", "-updated_at"
]


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def crew_filters(
    agency: str | None,
    status: CrewStatus | None,
    name: str | None,
    launch: str | None,
    include_deleted: bool,
) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if not include_deleted:
        filters.append(col(Crew.deleted_at).is_(None))
    if agency is not None:
        filters.append(func.lower(Crew.agency) == agency.lower())
    if status is not None:
        filters.append(col(Crew.status) == status)
    if name is not None:
        filters.append(col(Crew.name).ilike(f"%{escape_like(name)}%", escape="\\"))
    if launch is not None:
        filters.append(col(Crew.launches).contains([launch.lower()]))
    return filters


@router.get("", summary="List crew members", response_model=Page[CrewPublic])
def read_crew(
    session: SessionDep,
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
    """Crew members loaded from the upstream, filtered, sorted and paginated."""
    filters = crew_filters(agency, status, name, launch, include_deleted)
    total, exact = count_crew(session, filters)
    page = (
        select(*Crew.__table__.columns)  # type: ignore[attr-defined]
        .where(*filters)
        .order_by(*sort_order(Crew.__table__.c, sort))  # type: ignore[attr-defined]
        .offset(offset)
        .limit(limit)
        .subquery("member")
    )
    # PostgreSQL renders the page as JSON: rows written only after validation need no second
    # pass through pydantic, and this halves the Python work per request (see README).
    in_order = aggregate_order_by(page.table_valued(), *sort_order(page.c, sort))
    as_json = func.coalesce(func.json_agg(in_order), text("'[]'::json"))
    items = session.exec(select(cast(as_json, Text))).one()
    rest = json.dumps({"total": total, "limit": limit, "offset": offset, "total_exact": exact})
    return Response(f'{{"items": {items}, {rest[1:]}', media_type="application/json")


def sort_order(columns: Any, sort: SortKey) -> tuple[ColumnElement[Any], ...]:
    """ORDER BY for a sort key, with the id as tie-breaker so pages are stable."""
    key = columns[sort.lstrip("-")]
    return (key.desc() if sort.startswith("-") else key.asc(), columns["id"])


def count_crew(session: Session, filters: list[ColumnElement[bool]]) -> tuple[int, bool]:
    """Exact count when the planner expects at most ESTIMATE_ABOVE matches, else its estimate.

    Asking the planner costs a fraction of a millisecond; counting 100k matches costs a scan of
    all of them, which a paginated read should not pay on every page.
    """
    matches = select(literal(1)).select_from(Crew).where(*filters)
    connection = session.connection()
    compiled = matches.compile(connection)  # parameters stay bound, as in any other query
    explain = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled}", compiled.params)
    plan = explain.scalar_one()
    estimate = int((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"])
    if estimate > ESTIMATE_ABOVE:
        return estimate, False
    return session.exec(select(func.count()).select_from(matches.subquery())).one(), True


@router.get(
    "/{crew_id}", summary="Get one crew member", responses={404: {"description": "Unknown id"}}
)
def read_crew_member(
    session: SessionDep,
    crew_id: Annotated[str, Path(pattern=HEX24_ANY_CASE, description="24-hex crew id")],
) -> CrewPublic:
    """One crew member by id, including soft-deleted ones (their `deleted_at` is set)."""
    member = session.get(Crew, crew_id.lower())
    if member is None:
        raise HTTPException(status_code=404, detail=f"crew member {crew_id} not found")
    return CrewPublic.model_validate(member)
