from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, HTTPException, Path, Query, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlmodel import col, select

from app.api.deps import ReadConnectionDep, SessionDep, WriteAccess
from app.change_models import ChangeOp, ChangePublic
from app.ingest import changes, service
from app.models import (
    IngestReject,
    IngestRejectPublic,
    IngestRun,
    IngestRunPublic,
    Page,
    RunStatus,
    RunTrigger,
)

router = APIRouter(prefix="/ingest", tags=["ingest"])

RunId = Annotated[int, Path(ge=1, le=2_147_483_647, description="Run id")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size")]
Offset = Annotated[int, Query(ge=0, le=2_000_000_000, description="Rows to skip")]


class ActiveRunConflict(BaseModel):
    detail: str = Field(description="What is in the way")
    active_run_id: int | None = Field(description="The run queued or running (see Location)")


class Problem(BaseModel):
    detail: str = Field(description="What went wrong, in words")


class DatabaseUnavailable(BaseModel):
    detail: str = Field(description="What to do: try again after Retry-After seconds")
    cause: str = Field(
        description="The driver's name for the failure, e.g. `ReadOnlySqlTransaction` while the "
        "database is read-only (a failover in progress) or `OperationalError` while it is away",
        examples=["ReadOnlySqlTransaction"],
    )


def run_location(run_id: int | None) -> dict[str, str]:
    return {"Location": f"/ingest/{run_id}"} if run_id is not None else {}


def get_run_or_404(session: SessionDep, run_id: int) -> IngestRun:
    run = session.get(IngestRun, run_id)
    if run is None:
        raise HTTPException(status_code=404, detail=f"ingest run {run_id} not found")
    return run


@router.post(
    "",
    summary="Start an ingest run",
    status_code=status.HTTP_202_ACCEPTED,
    response_description="The run, queued; `Location` is its URL",
    dependencies=[WriteAccess],
    responses={
        409: {"model": ActiveRunConflict, "description": "A run is already queued or running"},
        401: {"model": Problem, "description": "Missing or wrong bearer token"},
        503: {
            "model": DatabaseUnavailable,
            "description": "The database cannot take writes now (read-only, away or too slow); "
            "`Retry-After` says when to try again",
        },
    },
)
def create_ingest_run(
    session: SessionDep,
    background_tasks: BackgroundTasks,
    response: Response,
    allow_mass_delete: Annotated[
        bool,
        Query(
            description="Let this run soft-delete more than INGEST_MAX_DELETE_FRACTION of the crew"
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        Query(
            description="Extract, validate and load in full, then roll back: the run and its "
            "change list are kept, the crew and its versions are left as they were",
            examples=[True],
        ),
    ] = False,
) -> IngestRunPublic:
    """Queue an extract -> validate -> load run and execute it in the background."""
    try:
        run = service.create_run(
            session, RunTrigger.api, allow_mass_delete=allow_mass_delete, dry_run=dry_run
        )
    except service.RunConflict as conflict:
        body = ActiveRunConflict(detail=str(conflict), active_run_id=conflict.active_run_id)
        headers = run_location(conflict.active_run_id)
        return JSONResponse(body.model_dump(), status_code=409, headers=headers)  # type: ignore[return-value]
    assert run.id is not None
    background_tasks.add_task(service.execute_run, run.id)
    response.headers.update(run_location(run.id))
    return IngestRunPublic.model_validate(run)


@router.get("", summary="List ingest runs", response_description="A page of runs")
def read_ingest_runs(
    session: SessionDep,
    status: Annotated[RunStatus | None, Query(description="Only runs with this status")] = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> Page[IngestRunPublic]:
    """Runs, newest first."""
    filters = [col(IngestRun.status) == status] if status else []
    total = session.exec(select(func.count()).select_from(IngestRun).where(*filters)).one()
    runs = session.exec(
        select(IngestRun)
        .where(*filters)
        .order_by(col(IngestRun.id).desc())
        .offset(offset)
        .limit(limit)
    ).all()
    items = [IngestRunPublic.model_validate(run) for run in runs]
    return Page[IngestRunPublic](items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{run_id}",
    summary="Get one ingest run",
    response_description="The run",
    responses={404: {"model": Problem, "description": "No run with this id"}},
)
def read_ingest_run(session: SessionDep, run_id: RunId) -> IngestRunPublic:
    """One run with its status, timings, counts and error."""
    return IngestRunPublic.model_validate(get_run_or_404(session, run_id))


@router.get(
    "/{run_id}/rejects",
    summary="List a run's rejected records",
    response_description="A page of the run's rejects",
    responses={404: {"model": Problem, "description": "No run with this id"}},
)
def read_ingest_rejects(
    session: SessionDep, run_id: RunId, limit: Limit = 100, offset: Offset = 0
) -> Page[IngestRejectPublic]:
    """Records of the run that failed validation, as received, with their errors."""
    get_run_or_404(session, run_id)
    where = col(IngestReject.run_id) == run_id
    total = session.exec(select(func.count()).select_from(IngestReject).where(where)).one()
    rejects = session.exec(
        select(IngestReject).where(where).order_by(col(IngestReject.id)).offset(offset).limit(limit)
    ).all()
    items = [IngestRejectPublic.model_validate(reject) for reject in rejects]
    return Page[IngestRejectPublic](items=items, total=total, limit=limit, offset=offset)


RUN_IS_DRY = "SELECT dry_run FROM ingest_runs WHERE id = %s"


@router.get(
    "/{run_id}/changes",
    summary="List what a run changed",
    response_description="A page of the members the run changed",
    responses={404: {"model": Problem, "description": "No run with this id"}},
)
def read_ingest_changes(
    connection: ReadConnectionDep,
    run_id: RunId,
    op: Annotated[
        ChangeOp | None, Query(description="Only changes of this kind", examples=["update"])
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[ChangePublic]:
    """Members the run inserted, updated, soft-deleted or restored, in id order.

    `changed` maps each field that differs to `{"before", "after"}`; for an insert `before` is
    null and for a delete `after` is null, field by field, so they list the whole member. A dry
    run lists what it would have changed. A run that failed or was cancelled changed nothing.
    """
    dry_run = connection.exec_driver_sql(RUN_IS_DRY, (run_id,)).scalar_one_or_none()
    if dry_run is None:
        raise HTTPException(status_code=404, detail=f"ingest run {run_id} not found")
    count_sql, page_sql = changes.page_sql(dry_run)
    params = {"run_id": run_id, "op": op and str(op), "limit": limit, "offset": offset}
    total = connection.exec_driver_sql(count_sql, params).scalar_one()
    rows = connection.exec_driver_sql(page_sql, params).all()
    items = [ChangePublic(crew_id=r.crew_id, op=r.op, changed=r.changed) for r in rows]
    return Page[ChangePublic](items=items, total=total, limit=limit, offset=offset)


@router.post(
    "/{run_id}/cancel",
    summary="Cancel a queued or running run",
    status_code=status.HTTP_202_ACCEPTED,
    response_description="The run, cancelled or asked to stop",
    dependencies=[WriteAccess],
    responses={
        404: {"model": Problem, "description": "No run with this id"},
        409: {"model": Problem, "description": "The run already finished"},
        401: {"model": Problem, "description": "Missing or wrong bearer token"},
    },
)
def cancel_ingest_run(session: SessionDep, run_id: RunId) -> IngestRunPublic:
    """A queued run ends at once; a running one stops at its next checkpoint and rolls back."""
    try:
        run = service.cancel_run(session, run_id)
    except service.RunNotCancellable as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    if run is None:
        raise HTTPException(status_code=404, detail=f"ingest run {run_id} not found")
    return IngestRunPublic.model_validate(run)
