"""A crew member's versions (SCD type 2), newest first, with conditional GET. The validator, the
count and the page are three statements in one REPEATABLE READ transaction: one state."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from sqlalchemy import Connection

from app.api import conditional, responses
from app.api.deps import crew_snapshot_connection, in_read_thread
from app.change_models import CrewVersionPublic
from app.models import HEX24_ANY_CASE, Page

router = APIRouter(prefix="/crew", tags=["crew"])

COUNT_VERSIONS = "SELECT count(*) FROM crew_versions WHERE crew_id = %(id)s"
# Served by the primary key (crew_id, valid_from), read backwards.
VERSIONS = """
SELECT crew_id AS id, name, status, agency, image, wikipedia, launches, created_at, deleted_at,
       op, opened_run_id AS run_id, closed_run_id AS closed_by_run_id, valid_from, valid_to
FROM crew_versions WHERE crew_id = %(id)s
ORDER BY valid_from DESC LIMIT %(limit)s OFFSET %(offset)s
"""


@router.get(
    "/{crew_id}/history",
    summary="List a crew member's versions",
    response_model=Page[CrewVersionPublic],
    response_description="A page of the member's versions, newest first",
    operation_id="get_crew_history",
    responses=responses.conditional_get("crew member"),
)
async def read_crew_member_history(
    request: Request,
    crew_id: Annotated[str, Path(pattern=HEX24_ANY_CASE, description="24-hex crew id")],
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 100,
    offset: Annotated[int, Query(ge=0, le=2_000_000_000, description="Rows to skip")] = 0,
) -> Response:
    """Every state the member has had, newest first: its fields, the run that opened the
    version, `valid_from` and `valid_to` (null for the current version)."""
    page = (crew_id.lower(), limit, offset)
    return await in_read_thread(history_page, request, *page, connect=crew_snapshot_connection)


def history_page(
    connection: Connection, request: Request, crew_id: str, limit: int, offset: int
) -> Response:
    """The answer of `read_crew_member_history`, in a worker thread, in one snapshot."""
    validators = conditional.member_validators(connection, crew_id)
    if validators is None:
        raise HTTPException(status_code=404, detail=f"crew member {crew_id} not found")
    if validators.matches(request):
        return conditional.not_modified(validators)
    params = {"id": crew_id, "limit": limit, "offset": offset}
    total = connection.exec_driver_sql(COUNT_VERSIONS, params).scalar_one()
    rows = connection.exec_driver_sql(VERSIONS, params).mappings().all()
    items = [CrewVersionPublic.model_validate(dict(row)) for row in rows]
    page = Page[CrewVersionPublic](items=items, total=total, limit=limit, offset=offset)
    return conditional.json_response(page.model_dump_json(), validators)
